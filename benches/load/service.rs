//! The processes the bench starts (the service, the ceiling roles): start, readiness, RSS,
//! and SIGTERM when they are dropped, on Ctrl-C, or when this process dies.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use sqlx::Connection;
use tokio::time::Instant;

/// Pids of the children still running, for the Ctrl-C handler.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

fn sigterm(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a pid of our own child; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Sends SIGTERM to every child still running (the Ctrl-C path, before exiting).
pub fn terminate_all() {
    for pid in registry().drain(..) {
        sigterm(pid);
    }
}

/// A child process, stopped with SIGTERM (then SIGKILL after 10 s) when dropped.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        registry().retain(|p| *p != pid);
        if self.exited().is_some() {
            return;
        }
        sigterm(pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop within 10 s of SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd`; the child gets SIGTERM if this process dies first.
fn spawn(mut cmd: Command, name: &str) -> Result<Proc, String> {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
    registry().push(child.id());
    Ok(Proc {
        child,
        name: name.to_owned(),
    })
}

/// The service's own configuration for the run.
pub struct ServiceEnv {
    pub database_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    pub rpc_queue: String,
    pub events_exchange: String,
    pub cache_prefix: String,
    pub http_port: u16,
    /// Where the service exports its spans, every request sampled; none: not exported.
    pub otlp_endpoint: Option<String>,
}

/// Starts the release binary of user-service with `env` only (nothing inherited but the
/// pool size and prefetch when set); its log goes to `log`. Waits for `/health/ready`.
pub async fn start_service(
    env: &ServiceEnv,
    log: &Path,
    http: &reqwest::Client,
) -> Result<Proc, String> {
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_user-service"));
    cmd.env_clear()
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("RPC_QUEUE", &env.rpc_queue)
        .env("EVENTS_EXCHANGE", &env.events_exchange)
        .env("CACHE_PREFIX", &env.cache_prefix)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", env.http_port))
        .env("RUST_LOG", "warn")
        // Local open mode's caller, named so that its bucket is kept but never binds.
        .env("RATE_LIMITS", "local=4000000000/1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log_file.try_clone().map_err(|e| e.to_string())?,
        ))
        .stderr(Stdio::from(log_file));
    if let Some(endpoint) = &env.otlp_endpoint {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", "user-service-bench")
            .env("OTEL_TRACES_SAMPLER", "always_on");
    }
    for pass in [
        "DB_POOL_SIZE",
        "DB_READ_CONNECTIONS",
        "RPC_PREFETCH",
        "_RJEM_MALLOC_CONF",
    ] {
        if let Ok(v) = std::env::var(pass) {
            cmd.env(pass, v);
        }
    }
    let mut proc = spawn(cmd, "user-service")?;
    let base = format!("http://127.0.0.1:{}", env.http_port);
    wait_ready(&mut proc, http, &base, log).await?;
    Ok(proc)
}

async fn wait_ready(
    proc: &mut Proc,
    http: &reqwest::Client,
    base: &str,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let url = format!("{base}/health/ready");
    loop {
        if let Some(status) = proc.exited() {
            return Err(format!(
                "user-service exited ({status}) before it was ready; see {}",
                log.display()
            ));
        }
        if let Ok(resp) = http.get(&url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "user-service not ready within 90 s; see {}",
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Re-runs this bench binary in `role` with `envs`; returns it and the line it announced.
pub fn start_role(role: &str, envs: &[(&str, String)]) -> Result<(Proc, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env("BENCH_ROLE", role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = spawn(cmd, role)?;
    let stdout = proc
        .child
        .stdout
        .take()
        .ok_or_else(|| format!("{role}: no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.starts_with("READY") => Ok((proc, line.trim().to_owned())),
        Ok(line) => Err(format!("{role} failed to start: '{}'", line.trim())),
        Err(_) => Err(format!("{role} did not announce itself within 30 s")),
    }
}

/// Resident memory of `pid` in MiB (VmRSS), or `None` when it cannot be read.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The RSS once it stops falling: freed pages go back to the system a few seconds after a
/// burst (jemalloc's decay), so "idle" is read when two readings a second apart agree
/// within 0.25 MiB, or after 20 s.
pub async fn settled_rss_mib(pid: u32) -> Option<f64> {
    let mut last = rss_mib(pid)?;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = rss_mib(pid)?;
        if (last - now).abs() < 0.25 {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// A port nobody listens on now, from 10000..20000: one the kernel hands out for `:0` may be
/// given to an outgoing connection's local end (the bench's own to PostgreSQL, made before
/// the service starts) before the service binds it (as the tests found).
pub fn free_port() -> Result<u16, String> {
    (0..1000)
        .map(|_| 10_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| "no free port in 10000..20000".to_owned())
}

/// Drops and recreates the database `url` names, through the `postgres` database.
pub async fn reset_database(url: &str) -> Result<(), String> {
    let (server, name) = split_database(url)?;
    let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{name}\""),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// The server part of `url` and the database it names (letters, digits and `_` only).
fn split_database(url: &str) -> Result<(&str, &str), String> {
    let (server, name) = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .ok_or_else(|| format!("no database name in {url}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "database name '{name}': letters, digits and _ only"
        ));
    }
    Ok((server, name))
}

/// The database `url` names.
pub fn database_name(url: &str) -> Result<&str, String> {
    split_database(url).map(|(_, name)| name)
}

/// Deletes `queues` (left over from an earlier run), so no stale request is served.
pub async fn delete_queues(amqp_url: &str, queues: &[String]) -> Result<(), String> {
    let conn = lapin::Connection::connect(amqp_url, Default::default())
        .await
        .map_err(|e| format!("RabbitMQ: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    for q in queues {
        ch.queue_delete(q.clone().into(), QueueDeleteOptions::default())
            .await
            .map_err(|e| format!("deleting queue {q}: {e}"))?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Deletes every Redis key under `prefix`: entries left by an earlier run (whose database is
/// gone) would answer reads by email with users that no longer exist.
pub async fn clear_cache(redis_url: &str, prefix: &str) -> Result<(), String> {
    use deadpool_redis::redis;
    let client = redis::Client::open(redis_url).map_err(|e| format!("Redis: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("Redis SCAN: {e}"))?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| format!("Redis DEL: {e}"))?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
