//! Starting the binary where a server is missing: it says so at once, with the remedy.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
