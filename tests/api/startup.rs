//! Starting the binary where a server is missing (it says so at once, with the remedy) or
//! frozen, and migrations bounded by their own timeout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

#[test]
fn a_missing_local_database_is_named_at_once_with_the_command_that_starts_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        )
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("still waiting for the database after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "PostgreSQL is not running at 127.0.0.1:{port} (DATABASE_URL)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/ensure-services.sh"), "{stderr}");
    assert!(stderr.contains("scripts/serve"), "{stderr}");
}

/// A database that accepts connections and never answers (a frozen process) does not hold
/// start-up in one endless handshake: each attempt gives up after `DB_ACQUIRE_TIMEOUT_MS`, the
/// service says so and tries again, and it starts serving once the database answers.
#[tokio::test]
async fn a_frozen_database_at_start_up_is_waited_for_one_bounded_attempt_at_a_time() {
    use std::io::BufRead;

    let relay = crate::relay::Relay::postgres().await;
    relay.freeze();
    let name = format!("us_test_{}", uuid::Uuid::new_v4().simple());
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap();
    drop(http);
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@{}/{name}", relay.addr),
        )
        .env("DB_ACQUIRE_TIMEOUT_MS", "300")
        .env("HTTP_ADDR", addr.to_string())
        .env("RPC_QUEUE", format!("{name}.rpc"))
        .env("EVENTS_EXCHANGE", format!("{name}.events"))
        .env("CACHE_PREFIX", &name)
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, logged) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let started = Instant::now();
    let mut retries = 0;
    while retries < 2 {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        match logged.recv_timeout(left) {
            Ok(line) => retries += usize::from(line.contains("database not ready")),
            Err(_) => {
                child.kill().unwrap();
                panic!("no second attempt within 20 s: start-up hangs on the frozen database");
            }
        }
    }
    relay.thaw();
    let ready = crate::helpers::eventually(Duration::from_secs(30), || async {
        let url = format!("http://{addr}/health/ready");
        let answer = reqwest::get(url).await.ok()?;
        answer.status().is_success().then_some(())
    });
    ready.await;
    child.kill().unwrap();
    let _ = child.wait();
    crate::helpers::databases::remove(&name).await;
}

/// Migrations run on a connection of their own, bounded by `DB_MIGRATION_TIMEOUT_SECONDS`
/// rather than the 15 s `statement_timeout` of every other statement (an index built over
/// millions of users takes minutes, and is not worth a warning), and a migration past that
/// bound is cancelled.
#[tokio::test]
async fn migrations_are_bounded_by_their_own_timeout_not_the_statements() {
    use sqlx::migrate::Migrator;
    use user_service::db;
    const REACH: Duration = Duration::from_secs(5);

    let name = format!("us_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let create = format!(r#"CREATE DATABASE "{name}""#);
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .unwrap();
    let options = db::options(&url).unwrap();
    let dir = std::env::temp_dir().join(&name);
    let migrations = |sql: &str| {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1_probe.sql"), sql).unwrap();
        dir.clone()
    };

    let probe = "CREATE TABLE probe AS SELECT current_setting('statement_timeout') AS setting";
    let migrator = Migrator::new(migrations(probe)).await.unwrap();
    db::migrate(&options, &migrator, REACH, Duration::from_secs(600))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let setting: String = sqlx::query_scalar("SELECT setting FROM probe")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(setting, "10min");
    let _ = conn.close().await;

    // A long migration is expected: sqlx's line for a slow statement is INFO, not WARN.
    let logs = crate::helpers::captured_logs();
    std::fs::write(dir.join("2_long.sql"), "SELECT pg_sleep(1.2)").unwrap();
    let migrator = Migrator::new(dir.clone()).await.unwrap();
    db::migrate(&options, &migrator, REACH, Duration::from_secs(600))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let slow: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("slow statement"))
        .collect();
    assert!(
        !slow.is_empty() && slow.iter().all(|l| l.contains(" INFO ")),
        "{slow:?}"
    );

    std::fs::write(dir.join("3_slow.sql"), "SELECT pg_sleep(30)").unwrap();
    let migrator = Migrator::new(dir.clone()).await.unwrap();
    let started = Instant::now();
    let failed = db::migrate(&options, &migrator, REACH, Duration::from_secs(1)).await;
    assert!(failed.is_err(), "a migration of 30 s ended within 1 s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A server frozen before the migrations begin holds them for `REACH`, not `limit`.
    let relay = crate::relay::Relay::postgres().await;
    relay.freeze();
    let frozen = db::options(&format!("postgres://postgres@{}/{name}", relay.addr)).unwrap();
    let started = Instant::now();
    let failed = db::migrate(&frozen, &migrator, REACH, Duration::from_secs(600)).await;
    assert!(failed.is_err(), "migrations on a frozen server");
    assert!(started.elapsed() < REACH * 2, "{:?}", started.elapsed());

    let _ = std::fs::remove_dir_all(&dir);
    crate::helpers::databases::remove(&name).await;
}
