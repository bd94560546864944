//! The pool of reads that the cache could not answer, and which of its connections it hands
//! out without asking the server first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

/// How long a reader's connection may have been idle and still be handed out without a ping.
/// Under load a connection is back in use within milliseconds, so this can be short, and the
/// shorter it is, the shorter an outage that can still reach a read.
pub const TRUSTED_IDLE: Duration = Duration::from_millis(100);
/// After a read lost its connection, every connection handed out is pinged for this long:
/// the server ends the connections it was told to drop one by one, and on a busy machine a
/// connection that answered a moment ago may be ended a moment later.
const AFTER_LOSS: Duration = Duration::from_secs(1);

/// The pool reads go to, and when a read last lost its connection under a statement.
///
/// sqlx pings every connection it hands out: a round trip, and on a busy machine a wait for
/// the server process to be scheduled, before each query. A connection used a moment ago is
/// taken as alive instead (as HikariCP does); one idle for [`TRUSTED_IDLE`] or more is
/// pinged, and so is every one for [`AFTER_LOSS`] after a read lost its own: a server that
/// dropped one connection (a restart, a failover, an operator) is likely dropping them all.
/// The read that met the loss is asked again ([`super::db::Db::asked`]), on a connection
/// that answered.
#[derive(Clone, Debug)]
pub struct Readers {
    pool: PgPool,
    lost: Arc<LastLoss>,
}

impl Readers {
    /// A pool of its own, opened as reads need its connections.
    pub fn new(options: PgPoolOptions, connect: PgConnectOptions) -> Self {
        let lost = Arc::new(LastLoss::default());
        let seen = lost.clone();
        let pool = options
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let trusted = meta.idle_for < TRUSTED_IDLE && seen.since() >= AFTER_LOSS;
                Box::pin(async move {
                    if !trusted {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(connect);
        Self { pool, lost }
    }

    /// Reads on a pool that pings every connection it hands out (the main pool, by default).
    pub fn sharing(pool: PgPool) -> Self {
        Self {
            pool,
            lost: Default::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read lost its connection: every connection handed out for a while is pinged first.
    pub(super) fn lost_one(&self) {
        self.lost.now();
    }
}

/// When a connection was last lost, as nanoseconds after [`EPOCH`] (0: never).
#[derive(Debug, Default)]
struct LastLoss(AtomicU64);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl LastLoss {
    fn now(&self) {
        let at = u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(at.max(1), Ordering::Relaxed);
    }

    /// How long ago the last loss was; forever when there was none.
    fn since(&self) -> Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => Duration::MAX,
            at => EPOCH.elapsed().saturating_sub(Duration::from_nanos(at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_recent_and_none_is_forever_ago() {
        let lost = LastLoss::default();
        assert_eq!(lost.since(), Duration::MAX);
        lost.now();
        let since = lost.since();
        assert!(since < TRUSTED_IDLE, "{since:?}");
    }
}
