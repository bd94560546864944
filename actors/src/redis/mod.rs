//! Redis as every part of the service reaches it: one pool and one [`Breaker`], shared by the
//! cache, the shared rate limits and the publisher's event mirror. Every call has a deadline;
//! a call that times out or cannot reach Redis counts against the breaker, and while the
//! breaker is open calls fail at once without asking (each caller has a fallback: a miss, a
//! local count, no mirror), so a Redis that hangs costs requests a few timeouts in all, not
//! one each. The breaker's probe (a `PING`) closes it when Redis answers again.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis;
use tokio::time::{Instant, timeout_at};

pub use pool::{Connection, Pool, pool};

mod pool;

use crate::breaker::{Breaker, Probe};

/// Timeouts or unreachable calls in a row that open the breaker.
const FAILURES_TO_OPEN: u32 = 3;
/// The probe's deadline: a Redis that answers a `PING` slower than this is not back.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Waits between probes while open: from this, doubling (with jitter) up to [`PROBE_MAX`].
const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// Cheap to clone; every clone is the same pool and breaker.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    breaker: Breaker,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// Why a call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("not asked: Redis' breaker is open")]
    Open,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached (a connection or I/O error).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A connection in use broke under the call (Redis restarted, say): the connection is
    /// dropped, and this does not count against the breaker (the `PING` deadpool-redis sends
    /// before every call would have found it; see [`pool`]).
    #[error("connection lost: {0}")]
    Lost(String),
    /// Redis answered with an error.
    #[error("{0}")]
    Refused(String),
}

impl Redis {
    /// The service's one view of Redis, with its breaker (see the module's doc).
    pub fn new(pool: Pool) -> Self {
        let probe_pool = pool.clone();
        let probe: Probe = Arc::new(move || {
            let pool = probe_pool.clone();
            Box::pin(async move { ping(&pool, PROBE_TIMEOUT).await.is_ok() })
        });
        let breaker = Breaker::new("redis", FAILURES_TO_OPEN, (PROBE_MIN, PROBE_MAX), probe);
        Self { pool, breaker }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// One call within `limit`. While the breaker is open it fails at once, asking nothing.
    pub async fn call<T>(
        &self,
        limit: Duration,
        call: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        if !self.breaker.allows() {
            return Err(Failure::Open);
        }
        let result = within(&self.pool, limit, call).await;
        match &result {
            Ok(_) | Err(Failure::Refused(_)) => self.breaker.success(),
            Err(Failure::Lost(_)) => {}
            Err(_) => self.breaker.failure(),
        }
        result
    }

    /// A `PING` within `limit`, whatever the breaker says (health endpoints report it).
    pub async fn ping(&self, limit: Duration) -> Result<(), Failure> {
        ping(&self.pool, limit).await
    }
}

async fn ping(pool: &Pool, limit: Duration) -> Result<(), Failure> {
    let answer = within(pool, limit, async |c: &mut Connection| {
        redis::cmd("PING").query_async::<String>(c).await
    });
    answer.await.map(|_| ())
}

async fn within<T>(
    pool: &Pool,
    limit: Duration,
    call: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
) -> Result<T, Failure> {
    let deadline = Instant::now() + limit;
    let mut link = timeout_at(deadline, pool.get())
        .await
        .map_err(|_| Failure::Timeout(limit))?
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    let failure = match timeout_at(deadline, call(&mut link.conn)).await {
        Ok(Ok(answer)) => return Ok(answer),
        // Broken, not slow: redis' own response timeout is a hang, counted as any other.
        Ok(Err(e))
            if link.unproven
                && !e.is_timeout()
                && (e.is_connection_dropped() || e.is_io_error()) =>
        {
            Failure::Lost(e.to_string())
        }
        Ok(Err(e)) => failure(&e),
        Err(_) => Failure::Timeout(limit),
    };
    if !matches!(failure, Failure::Refused(_)) {
        // Broken or stuck: never handed out again.
        drop(deadpool::managed::Object::take(link));
    }
    Err(failure)
}

fn failure(e: &redis::RedisError) -> Failure {
    let unreachable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error();
    match unreachable {
        true => Failure::Unreachable(e.to_string()),
        false => Failure::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool to a port where nothing listens: every call is refused at once.
    fn nowhere() -> Redis {
        Redis::new(pool("redis://127.0.0.1:1", 4).unwrap())
    }

    #[tokio::test]
    async fn failures_open_the_breaker_and_then_nothing_is_asked() {
        let redis = nowhere();
        let ping = async |c: &mut Connection| redis::cmd("PING").query_async::<String>(c).await;
        for _ in 0..FAILURES_TO_OPEN {
            let failed = redis.call(Duration::from_secs(1), ping).await;
            assert!(matches!(failed, Err(Failure::Unreachable(_))), "{failed:?}");
        }
        assert!(redis.breaker().is_open());
        let failed = redis.call(Duration::from_secs(1), ping).await;
        assert!(matches!(failed, Err(Failure::Open)), "{failed:?}");
    }

    /// Redis drops the connection the last call used, again and again (as a restart
    /// would): each time the next call on it fails as lost, without opening the breaker,
    /// and the call after that is answered on a new connection.
    #[tokio::test]
    async fn a_connection_dropped_under_use_is_replaced_without_opening_the_breaker() {
        let redis = Redis::new(pool("redis://127.0.0.1:6379", 4).unwrap());
        let id =
            async |c: &mut Connection| redis::cmd("CLIENT").arg("ID").query_async::<i64>(c).await;
        let mut admin = redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let limit = Duration::from_secs(2);
        for _ in 0..FAILURES_TO_OPEN + 2 {
            let used = redis.call(limit, id).await.unwrap();
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(used)
                .query_async(&mut admin)
                .await
                .unwrap();
            assert_eq!(killed, 1);
            let lost = redis.call(limit, id).await;
            assert!(matches!(lost, Err(Failure::Lost(_))), "{lost:?}");
            assert!(!redis.breaker().is_open());
            let new = redis.call(limit, id).await.unwrap();
            assert_ne!(new, used);
        }
    }
}
