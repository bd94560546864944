//! The connections to Redis. deadpool-redis' own manager proves every connection with a
//! `PING` each time it is handed out: a round trip before every call, half of all the
//! commands Redis served at a million users. This one hands a connection used within the
//! last [`TRUSTED_IDLE`] out as it is, marked unproven. A call that finds an unproven
//! connection broken fails as [`super::Failure::Lost`], not counted against the breaker (the
//! `PING` would have spared it), and a connection that failed or timed out is never handed
//! out again.

use std::time::Duration;

use deadpool_redis::redis::RedisError;
use deadpool_redis::redis::aio::MultiplexedConnection;

/// A connection used more recently than this is trusted without a `PING`. Handed out last
/// in, first out, so that under load the same few stay in use and trusted.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

pub type Pool = deadpool::managed::Pool<Manager>;
pub type Connection = MultiplexedConnection;

/// What the pool holds: a connection, and whether it was handed out without its `PING`.
pub struct Link {
    pub(crate) conn: MultiplexedConnection,
    pub(super) unproven: bool,
}

/// deadpool-redis' manager, proving only the connections idle for [`TRUSTED_IDLE`].
pub struct Manager(deadpool_redis::Manager);

impl deadpool::managed::Manager for Manager {
    type Type = Link;
    type Error = RedisError;

    async fn create(&self) -> Result<Link, RedisError> {
        let conn = self.0.create().await?;
        Ok(Link {
            conn,
            unproven: false,
        })
    }

    async fn recycle(
        &self,
        link: &mut Link,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        link.unproven = metrics.last_used() < TRUSTED_IDLE;
        match link.unproven {
            true => Ok(()),
            false => self.0.recycle(&mut link.conn, metrics).await,
        }
    }
}

/// A pool of at most `size` connections to `url`; fails only on a URL Redis cannot use.
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let manager = deadpool_redis::Manager::new(url).map_err(|e| e.to_string())?;
    let config = deadpool::managed::PoolConfig {
        queue_mode: deadpool::managed::QueueMode::Lifo,
        ..deadpool::managed::PoolConfig::new(size)
    };
    Pool::builder(Manager(manager))
        .config(config)
        .build()
        .map_err(|e| e.to_string())
}
