//! Start-up and shutdown: database, actors, the HTTP edge; in-flight requests finish on stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use user_core::Core;
use user_core::cache::{CacheManager, CacheSettings, UserCache};
use user_core::health::{Health, HealthMonitor};
use user_core::limits::{RateLimiter, RateLimits};
use user_core::publisher::{EventPublisher, PublisherConfig};
use user_core::redis::Redis;
use user_core::store::{PgGuard, Store, UserStore};
use user_core::supervisor::{ActorHandle, Supervision};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::{db, http, rpc};

/// How long start-up waits for PostgreSQL before giving up.
const DB_PATIENCE: Duration = Duration::from_secs(60);
/// How long shutdown waits for the database connections to close.
const POOL_CLOSE_PATIENCE: Duration = Duration::from_secs(5);
/// Redis connections: every cached read takes one for a round trip, so more than the cores.
const REDIS_POOL_SIZE: usize = 32;

pub struct Application {
    listener: TcpListener,
    http_limits: crate::config::HttpLimits,
    edge: Arc<http::Edge>,
    rpc: Arc<rpc::RpcEdge>,
    /// The main pool and the readers' (closed at the end).
    pools: [PgPool; 2],
    /// Turns true when the service should stop; every part watches it.
    stop: watch::Sender<bool>,
    actors: Actors,
}

/// The supervised actors. Not an API: for tests that inject faults (`fault-injection`).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Actors {
    pub user_store: ActorHandle<UserStore>,
    pub cache_manager: ActorHandle<CacheManager>,
    pub event_publisher: ActorHandle<EventPublisher>,
    pub rate_limiter: ActorHandle<RateLimiter>,
    pub health_monitor: ActorHandle<HealthMonitor>,
}

impl Application {
    /// Connects and binds; must run inside an actix `System` (the actors start on its arbiter).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config, DB_PATIENCE).await?;
        crate::metrics::handle();
        let (stop, stopped) = watch::channel(false);
        // Every actor restarts (on this arbiter) when it dies, until the service stops.
        let supervision = Supervision::new(Arbiter::current(), stopped.clone());
        // What every part reports to and /health reads; it outlives any HealthMonitor.
        let health = Health::default();
        let (monitored, monitor_pool, monitor_stop) =
            (health.clone(), pool.clone(), stopped.clone());
        let health_monitor = supervision.start("healthMonitor", move || {
            HealthMonitor::new(
                monitored.clone(),
                monitor_pool.clone(),
                monitor_stop.clone(),
            )
        });
        // One pool and one breaker for every Redis user (the cache, shared limits, the event
        // mirror, /health): a hung Redis is cut off for all of them at once.
        let redis = user_core::redis::pool(&config.redis_url, REDIS_POOL_SIZE)
            .map_err(|e| tracing::warn!(error = %e, "REDIS_URL unusable; no cache, events are not mirrored to Redis"))
            .ok()
            .map(Redis::new);
        let (billing_keys, configured) = config.billing_keys();
        if !configured {
            tracing::warn!(
                "no BILLING_KEYS set: billing data is sealed with the fixed development key; never use this in production"
            );
        }
        let cache = UserCache::new(
            redis.clone(),
            CacheSettings {
                prefix: config.cache_prefix.clone(),
                ttl: config.cache_ttl,
            },
            billing_keys.clone(),
        );
        let (manager_cache, redis_url, manager_health, manager_stop) = (
            cache.clone(),
            config.redis_url.clone(),
            health.clone(),
            stopped.clone(),
        );
        let cache_manager = supervision.start("cacheManager", move || {
            CacheManager::new(
                manager_cache.clone(),
                redis_url.clone(),
                manager_health.clone(),
                manager_stop.clone(),
            )
        });
        let rpc_billing_keys = billing_keys.clone();
        // Created once: every request that needs the database passes it.
        let db_breaker = db::breaker(&pool);
        let guard = PgGuard::new(db_breaker.clone(), config.database.acquire_timeout);
        let readers = db::readers(&config)?;
        let reads = Store::new(pool.clone(), cache.clone(), billing_keys, guard)
            .reading_from(readers.clone());
        let (writes, retention) = (reads.clone(), config.retention);
        let store = supervision.start("userStore", move || {
            UserStore::new(writes.clone(), retention.idempotency)
                .erasing_deleted_after(retention.erase_deleted_after)
                .keeping_history_for(retention.audit)
        });
        // Limits are counted in Redis by every instance together, when there is a Redis.
        let limits = match &redis {
            Some(redis) => RateLimits::shared(
                config.rate_limits.clone(),
                redis.clone(),
                &config.cache_prefix,
            ),
            None => RateLimits::new(config.rate_limits.clone()),
        };
        let (sweeper, limiter_health) = (limits.clone(), health.clone());
        let rate_limiter = supervision.start("rateLimiter", move || {
            RateLimiter::new(sweeper.clone(), limiter_health.clone())
        });
        let publisher = PublisherConfig {
            broker: config.amqp.clone(),
            exchange: config.events_exchange.clone(),
            envelope: config.event_envelope,
            retention: config.retention.outbox,
            redis: redis.clone().map(|r| (r, config.cache_prefix.clone())),
            retry: config.schedules.event_retry,
        };
        let (publisher_pool, publisher_health) = (pool.clone(), health.clone());
        let event_publisher = supervision.start("eventPublisher", move || {
            EventPublisher::new(
                publisher_pool.clone(),
                publisher.clone(),
                publisher_health.clone(),
                stopped.clone(),
            )
        });
        let actors = Actors {
            user_store: store.clone(),
            cache_manager,
            event_publisher,
            rate_limiter,
            health_monitor,
        };
        let auth = Arc::new(Authenticator::new(config.auth.clone()));
        if auth.is_open() {
            tracing::warn!(
                "local open mode: no INTERNAL_API_KEYS or INTERNAL_SERVICE_SECRET set; serving loopback callers only"
            );
        }
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http_addr))?;
        let core = Core::new(reads, store, limits);
        let rpc = Arc::new(rpc::RpcEdge {
            config: rpc::RpcConfig {
                broker: config.amqp.clone(),
                queue: config.rpc_queue.clone(),
                queue_type: config.rpc_queue_type,
                prefetch: config.rpc_prefetch,
                dead_letter_ttl: config.retention.dead_letters,
                unauthenticated_reply_prefix: config.rpc_unauthenticated_reply_prefix.clone(),
            },
            instance: format!(
                "user-service/{}/{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            core: core.clone(),
            auth: auth.clone(),
            health: health.clone(),
            billing_keys: rpc_billing_keys,
            repeats: rpc::Repeats::default(),
        });
        let edge = Arc::new(http::Edge {
            core,
            auth,
            pool: pool.clone(),
            db_breaker,
            health,
            actors: supervision,
            redis,
            cache,
            started: Instant::now(),
            body_timeout: config.http.body_timeout,
        });
        Ok(Self {
            listener,
            http_limits: config.http,
            edge,
            rpc,
            pools: [pool, readers.pool().clone()],
            stop,
            actors,
        })
    }

    /// The supervised actors, for tests that inject faults. Not an API.
    #[doc(hidden)]
    pub fn actors(&self) -> Actors {
        self.actors.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves REST and RPC until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let stop_tx = self.stop;
        let stop = stop_tx.subscribe();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(crate::metrics::upkeep(stop.clone()));
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving REST");
        let http = http::server::serve(
            self.listener,
            warp::service(http::filter(self.edge)),
            self.http_limits,
            stop.clone(),
        );
        // On the worker pool, not this (the actix System's) thread: each delivery's task is
        // then spawned onto the worker that took the delivery, without waking another thread.
        let rpc = tokio::spawn(rpc::run(self.rpc, stop));
        let ((), rpc) = tokio::join!(http, rpc);
        if let Err(e) = rpc {
            tracing::error!(error = %e, "the RPC edge failed");
        }
        // Connections a frozen database holds never come back: not waited for past this.
        let closed = futures::future::join_all(self.pools.iter().map(PgPool::close));
        if tokio::time::timeout(POOL_CLOSE_PATIENCE, closed)
            .await
            .is_err()
        {
            tracing::warn!("database connections not closed in time; left to the server");
        }
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
