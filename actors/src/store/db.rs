//! What every operation works with ([`Db`]): the pool and the cache in front of it, reads
//! that fall through to the database, and the transaction helpers every write uses.

use super::db_error;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::time::Instant;

use super::ledger::{self, Keyed};
use super::outbox::OutboxSignal;
use super::rows;
use crate::cache::UserCache;
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::views::Rendered;
use user_domain::{Email, UserId};

/// What every operation works with: the database, and the cache in front of it.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: PgPool,
    pub(super) cache: UserCache,
    /// Seal and open the billing fields stored in the users table.
    pub(super) keys: Arc<BillingKeys>,
    /// Wakes the publisher after a commit that added events.
    pub(super) signal: OutboxSignal,
    /// What reads pass when they turn to the database, after the cache.
    pub(super) guard: super::PgGuard,
    /// The request's deadline (an RPC `expiration`): a write not committing by then is
    /// rolled back. Once a commit starts it finishes, with its invalidation.
    pub(super) deadline: Option<Instant>,
}

impl Db {
    /// A read that the cache could not answer asks the database: at once refused while its
    /// breaker is open; its answer tells the breaker. (The wait is bounded by the caller.)
    pub(super) async fn asked<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        self.guard.admit()?;
        let result = query.await;
        self.guard.note(&result);
        result
    }

    /// Commits, unless the request's deadline has passed: then nothing was done, truly.
    pub(super) async fn commit(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), CoreError> {
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            tx.rollback().await.map_err(db_error)?;
            return Err(CoreError::Unavailable(
                "deadline passed; nothing was done".to_owned(),
            ));
        }
        tx.commit().await.map_err(db_error)?;
        self.signal.raise();
        Ok(())
    }

    /// The live users among `ids`, from the cache where it has them.
    pub(super) async fn find(
        &self,
        ids: &[UserId],
        caller: &str,
    ) -> Result<HashMap<UserId, Arc<Rendered>>, CoreError> {
        let (mut found, mark) = self.cache.get_many(ids, caller).await;
        let missing: Vec<UserId> = ids
            .iter()
            .filter(|id| !found.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            let fetched = self
                .asked(rows::fetch_many(&self.pool, &self.keys, &missing))
                .await?
                .into_iter()
                .map(Rendered::new)
                .collect::<Result<Vec<_>, _>>()?;
            self.cache.fill(mark, &fetched, false).await;
            found.extend(fetched.into_iter().map(|u| (u.user.id, u)));
        }
        Ok(found)
    }

    pub(super) async fn get(&self, id: UserId, caller: &str) -> Result<Arc<Rendered>, CoreError> {
        self.find(&[id], caller)
            .await?
            .remove(&id)
            .ok_or_else(|| CoreError::UserNotFound(id.to_string()))
    }

    pub(super) async fn get_by_email(
        &self,
        email: &Email,
        caller: &str,
    ) -> Result<Arc<Rendered>, CoreError> {
        let (cached, mark) = self.cache.get_by_email(email, caller).await;
        if let Some(u) = cached {
            return Ok(u);
        }
        let u = self
            .asked(rows::fetch_by_email(&self.pool, &self.keys, email))
            .await?
            .ok_or_else(|| CoreError::UserNotFound(email.to_string()))?;
        let u = Rendered::new(u)?;
        self.cache.fill(mark, std::slice::from_ref(&u), true).await;
        Ok(u)
    }
}

/// Starts a write: its transaction, or — when the request's key was answered before — that
/// same answer, returned at once by the calling function.
macro_rules! begin {
    ($db:expr, $keyed:expr) => {
        match $crate::store::ledger::begin(&$db.pool, &$db.keys, $keyed).await? {
            $crate::store::ledger::Begun::Fresh(tx) => tx,
            $crate::store::ledger::Begun::Replay(reply) => return Ok(reply),
        }
    };
}
pub(super) use begin;

impl Db {
    /// Records a keyed write's reply in the ledger and commits, with the write's transaction.
    pub(super) async fn finish(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        keyed: Option<&Keyed>,
        reply: &Reply,
    ) -> Result<(), CoreError> {
        ledger::record(&mut tx, &self.keys, keyed, reply).await?;
        self.commit(tx).await
    }
}
