//! The service beyond a `TestApp`: its binary as a process of its own, and everything the
//! services of this test process log, captured.

use super::{AUTH_KEY, CATALOG_KEY, SECRET};

/// Everything the services in this test process log from now on (debug and up), kept in
/// memory. Installed once, as the process's global subscriber.
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let writer = move || Capture(sink.clone());
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,lapin=info,amq_protocol=info,hyper=info,hyper_util=info,reqwest=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(false)
            .try_init();
        logs
    })
    .clone()
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The service's binary as a process of its own, on database `db` (created by the service),
/// its queues, exchange and cache prefix named after it, the test keys, JSON logs into
/// `log`, listening on a free port (returned). Nothing inherited from the environment but
/// `PATH`; the caller adds what else it needs and spawns.
pub fn service_process(db: &str, log: &std::path::Path) -> (std::process::Command, u16) {
    let port = free_port();
    let log = std::fs::File::create(log).expect("a log file");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{db}"),
        )
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RPC_QUEUE", format!("{db}.rpc"))
        .env("EVENTS_EXCHANGE", format!("{db}.events"))
        .env("CACHE_PREFIX", db)
        .env(
            "INTERNAL_API_KEYS",
            format!("auth-service={AUTH_KEY},game-catalog={CATALOG_KEY}"),
        )
        .env("INTERNAL_SERVICE_SECRET", SECRET)
        .env("DB_POOL_SIZE", "8")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(std::process::Stdio::null());
    (command, port)
}

/// A port nobody listens on, for a service process to bind. Not one the kernel hands out for
/// `:0`: that range is also where every outgoing connection's local end comes from, and
/// between this check and the service's bind, a connection of another test (to PostgreSQL,
/// say) took such a port (`Address already in use`). Ports 10000..20000 are bound only on
/// purpose, so only another test drawing the same one can collide.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000..20000")
}
