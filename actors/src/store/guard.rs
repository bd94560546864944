//! How requests wait for PostgreSQL: never longer than the request's patience
//! (`DB_ACQUIRE_TIMEOUT_MS`), and not at all while its breaker is open. A server that stopped
//! answering (a frozen process, a link that holds every byte) keeps open connections silent:
//! no timeout of the server (`statement_timeout`) can fire then, and the pool's acquire
//! timeout does not cover the queries on a connection it handed out. So the wait itself is
//! bounded, once, where every operation passes ([`crate::Core`]); after a few such timeouts
//! in a row the breaker opens, and what needs the database is refused at once until a probe
//! finds it answering again. Reads that the cache answers never ask.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use tokio::time::Instant;

use crate::breaker::Breaker;
use user_domain::error::CoreError;

/// What callers see when PostgreSQL is unreachable (see `db_error`); the one kind of
/// `UNAVAILABLE` that counts against the breaker besides a timeout.
pub(crate) const UNREACHABLE: &str = "database is unavailable, retry later";

/// What callers see when the server closed a connection under a statement; a read is asked
/// again first (see `Db::asked`). It does not count against the breaker: a restart drops
/// every connection at once, failing each group of creates in flight, and the database may
/// well be back. Whether it is gone, the next connection tells: refused until the pool's
/// patience runs out, it is [`UNREACHABLE`]; a read that loses its fresh connections too
/// makes it so (`Db::asked`).
pub(crate) const LOST: &str = "the database closed the connection, retry later";

/// A PostgreSQL that has not answered a statement in this long has stopped: a live one
/// cancels any statement within `statement_timeout` (15 s, see the service's connection
/// options). Work that outlives its caller's answer (a write's task, the publisher's polls)
/// is abandoned after it.
pub const HUNG_AFTER: Duration = Duration::from_secs(20);

/// How many users a write may write in one patience (see [`PgGuard::writing`]).
pub const USERS_A_PATIENCE: usize = 250;

/// The breaker and the patience of every request that needs the database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgGuard {
    breaker: Breaker,
    patience: Duration,
}

impl PgGuard {
    pub fn new(breaker: Breaker, patience: Duration) -> Self {
        Self { breaker, patience }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// How long a request waits for the database.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// The guard of a write of `users` users: one patience for every [`USERS_A_PATIENCE`] of
    /// them. A batch's one transaction takes longer than a write of one user, and on a busy
    /// database it should not time out (and count against the breaker) for its size alone.
    pub fn writing(&self, users: usize) -> Self {
        let times = u32::try_from(users.div_ceil(USERS_A_PATIENCE).max(1)).unwrap_or(u32::MAX);
        Self {
            breaker: self.breaker.clone(),
            patience: self.patience.saturating_mul(times),
        }
    }

    /// The latest a request starting now may commit (see `Db::commit`).
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.patience
    }

    /// Refuses at once while the breaker is open: one atomic load.
    #[inline]
    pub fn admit(&self) -> Result<(), CoreError> {
        match self.breaker.allows() {
            true => Ok(()),
            false => Err(CoreError::Unavailable(
                "database is not answering; refused without waiting, retry later".to_owned(),
            )),
        }
    }

    /// Tells the breaker how a wait for the database ended: unreachable is a failure, any
    /// other answer (a user, a conflict) a success. A write refused for its own deadline
    /// (an RPC expiration) says nothing about the database.
    pub fn note<T>(&self, result: &Result<T, CoreError>) {
        match result {
            Err(CoreError::Unavailable(m)) if m == UNREACHABLE => self.breaker.failure(),
            Err(CoreError::Unavailable(_)) => {}
            _ => self.breaker.success(),
        }
    }

    /// Waits for `work` for the patience at most; giving up counts against the breaker.
    /// What `work` was doing is dropped: a read, or the caller's wait for a write, whose own
    /// task commits only before its deadline ([`Self::deadline`]).
    pub fn bound<T>(
        &self,
        work: impl Future<Output = Result<T, CoreError>>,
    ) -> impl Future<Output = Result<T, CoreError>> {
        self.wait(work)
            .map(|done| done.unwrap_or_else(|| Err(self.gave_up())))
    }

    /// Work that needs the database from its start: admitted, bounded, and its end noted.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        self.admit()?;
        let result = self.wait(work).await.ok_or_else(|| self.gave_up())?;
        self.note(&result);
        result
    }

    /// `None` when the patience ran out first (a failure, counted). Combinators, not an
    /// async fn: one would hold `work` twice, as its argument and as what it awaits, and a
    /// read's future is moved whole at every layer that wraps it.
    fn wait<T>(&self, work: impl Future<Output = T>) -> impl Future<Output = Option<T>> {
        tokio::time::timeout(self.patience, work).map(|done| {
            let done = done.ok();
            if done.is_none() {
                self.breaker.failure();
            }
            done
        })
    }

    fn gave_up(&self) -> CoreError {
        CoreError::Unavailable(format!(
            "database did not answer within {} ms; a write may or may not have been applied: \
             retry it with the same request key",
            self.patience.as_millis()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::breaker::Probe;

    fn guard() -> PgGuard {
        let silent: Probe = Arc::new(|| Box::pin(async { false }));
        let wait = Duration::from_secs(60);
        let breaker = Breaker::new("database", 3, (wait, wait), silent);
        PgGuard::new(breaker, Duration::from_millis(10))
    }

    #[tokio::test]
    async fn timeouts_in_a_row_open_the_breaker_and_then_nothing_waits() {
        let g = guard();
        for _ in 0..3 {
            let hung = g.run(std::future::pending::<Result<(), CoreError>>()).await;
            assert!(matches!(hung, Err(CoreError::Unavailable(m)) if m.contains("did not answer")));
        }
        assert!(g.breaker().is_open());
        let refused = g.run(async { Ok(()) }).await;
        assert!(matches!(refused, Err(CoreError::Unavailable(m)) if m.contains("without waiting")));
    }

    #[test]
    fn a_batch_waits_one_patience_for_every_250_users_it_writes() {
        let g = guard();
        let waits = |users| g.writing(users).patience().as_millis();
        assert_eq!([waits(0), waits(1), waits(250)], [10, 10, 10]);
        assert_eq!([waits(251), waits(1000)], [20, 40]);
        assert_eq!(waits(usize::MAX), 10 * u128::from(u32::MAX), "no overflow");
    }

    #[tokio::test]
    async fn only_an_unreachable_database_counts_against_it() {
        let g = guard();
        for _ in 0..5 {
            // A write past its own (RPC) deadline, a lost connection, then an answer: none
            // is a failure.
            g.note::<()>(&Err(CoreError::Unavailable("deadline passed".into())));
            g.note::<()>(&Err(CoreError::Unavailable(LOST.into())));
            g.note::<()>(&Err(CoreError::UserNotFound("x".into())));
        }
        assert!(g.breaker().allows());
        for _ in 0..3 {
            g.note::<()>(&Err(CoreError::Unavailable(UNREACHABLE.into())));
        }
        assert!(g.breaker().is_open());
    }
}
