//! Start-up and shutdown: database, actors, the HTTP edge; in-flight requests finish on stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use sqlx::PgPool;
use tokio::net::TcpListener;
use user_core::Core;
use user_core::store::UserStore;
use user_core::supervisor::Restarting;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::{db, http};

/// How long start-up waits for PostgreSQL before giving up.
const DB_PATIENCE: Duration = Duration::from_secs(60);

pub struct Application {
    listener: TcpListener,
    edge: Arc<http::Edge>,
    pool: PgPool,
}

impl Application {
    /// Connects and binds; must run inside an actix `System` (the actors start on its arbiter).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config, DB_PATIENCE).await?;
        let store_pool = pool.clone();
        let store = Restarting::start("UserStore", Arbiter::current(), move || {
            UserStore::new(store_pool.clone())
        });
        let auth = Authenticator::new(config.auth.clone());
        if auth.is_open() {
            tracing::warn!(
                "local open mode: no INTERNAL_API_KEYS or INTERNAL_SERVICE_SECRET set; serving loopback callers only"
            );
        }
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_addr))?;
        let edge = Arc::new(http::Edge {
            core: Core::new(store),
            auth,
            pool: pool.clone(),
            started: Instant::now(),
        });
        Ok(Self {
            listener,
            edge,
            pool,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving REST");
        warp::serve(http::filter(self.edge))
            .incoming(self.listener)
            .graceful(shutdown)
            .run()
            .await;
        self.pool.close().await;
        tracing::info!("stopped");
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
