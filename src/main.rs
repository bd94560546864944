use std::process::ExitCode;

use user_service::app::{Application, shutdown_signal};
use user_service::config::Config;
use user_service::telemetry;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("user-service: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
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
        let app = Application::build(config).await?;
        app.run_until(shutdown_signal()).await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "user-service failed");
            eprintln!("user-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
