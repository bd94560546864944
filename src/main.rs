use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use user_service::app::{Application, shutdown_signal};
use user_service::config::Config;
use user_service::telemetry;
use user_service::{db, preflight};

const USAGE: &str = "\
usage:
  user-service                       serve REST and RPC (configuration from the environment,
                                     as the README lists it)
  user-service call METHOD [JSON]    send one RPC request and print the reply, e.g.
                                     user-service call users.exists '{\"id\": \"…\"}'
                                     (user-service call --help for its methods and variables;
                                     also installable alone: cargo install --path client)
  user-service rekey                 re-seal the stored billing data (taxId, billingAddress)
                                     under the newest key of BILLING_KEYS
  user-service COMMAND --help        help on a command";

const REKEY_HELP: &str = "\
usage: user-service rekey

Re-seals the stored billing data (taxId, billingAddress) under the newest key of BILLING_KEYS,
each value bound to its user and field (values sealed before binding existed, or in plain
text, move to the bound form), and prints how many users' data changed.
Environment: the service's configuration, of which it uses DATABASE_URL and BILLING_KEYS.
It is safe while the service runs (short batches in id order, row locks as a write takes) and
can be run again: values already under the newest key are skipped. Keep the old keys in
BILLING_KEYS until it has finished (cached users sealed under them still open, so nothing is
invalidated).";

/// jemalloc instead of the system allocator: glibc malloc keeps what a burst of requests
/// freed in its heaps (fragmented, never trimmed), so resident memory stays at its peak after
/// the load; jemalloc gives unused pages back to the system after a few seconds.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns idle pages without
/// waiting for the next allocation, after one second unused instead of ten (a burst's pages
/// go back before the service is idle for long), and two arenas (the runtime has two workers)
/// keep the idle footprint small. `_RJEM_MALLOC_CONF` in the environment still overrides them.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 53] = b"background_thread:true,narenas:2,dirty_decay_ms:1000\0";

/// Users re-sealed per transaction by `user-service rekey`.
const REKEY_BATCH: i64 = 500;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = |a: &String| matches!(a.as_str(), "-h" | "--help" | "help");
    match args.first().map(String::as_str) {
        None => serve(),
        Some("call") => user_service_client::cli::main("user-service call", &args[1..]),
        Some("rekey") if args.len() == 1 => rekey(),
        Some("rekey") if args.len() == 2 && help(&args[1]) => print_help(REKEY_HELP),
        Some("-h" | "--help" | "help") => print_help(USAGE),
        Some(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Help on stdout; a closed pipe (`| head`) is no reason to panic.
fn print_help(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

/// `user-service rekey`: prints how many users' billing data changed.
fn rekey() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("user-service rekey: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let (keys, configured) = config.billing_keys();
    if !configured {
        eprintln!("user-service rekey: no BILLING_KEYS set; using the development key");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("user-service rekey: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = runtime.block_on(async {
        preflight::check(&config).await?;
        let pool = db::connect(&config, Duration::from_secs(10)).await?;
        let stats = user_core::store::rekey(&pool, &keys, REKEY_BATCH).await?;
        anyhow::Ok(stats)
    });
    match done {
        Ok(stats) => {
            println!(
                "user-service rekey: {} of {} users with billing data re-sealed under key '{}'",
                stats.changed,
                stats.scanned,
                keys.current_kid()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("user-service rekey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("user-service: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(config.log_format, config.span_export.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("user-service: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // The actix System runs on a multi-thread runtime: actors on this thread, warp, sqlx
    // (and lapin) tasks on the worker pool, so every core is used.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("user-service: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix::System::with_tokio_rt(move || runtime);
    let result = system.block_on(async move {
        preflight::check(&config).await?;
        let app = Application::build(config).await?;
        app.run_until(shutdown_signal()).await;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "user-service failed");
            eprintln!("user-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
