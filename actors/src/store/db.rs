//! What every operation works with ([`Db`]): the pool and the cache in front of it, reads
//! that fall through to the database, and the transaction helpers every write uses.

use super::db_error;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tracing::Instrument;

use super::guard::{LOST, UNREACHABLE};
use super::ledger::{self, Begun, Keyed};
use super::outbox::OutboxSignal;
use super::readers::Readers;
use super::reads::Reads;
use crate::cache::{Key, UserCache};
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::views::Rendered;
use user_domain::{Email, UserId};

/// How many times a read that lost its connection is asked again. Connections a server drops
/// one after another (an operator's `pg_terminate_backend` over them) can fail a read's
/// first retry as well; a restart drops them all at once.
const ASKED_AGAIN: usize = 2;

/// What every operation works with: the database, and the cache in front of it.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: PgPool,
    /// Where reads the cache could not answer go ([`Self::asked`]).
    pub(super) readers: Readers,
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
    /// Where reads the in-process copy cannot answer are gathered.
    pub(super) reads: Reads,
}

impl Db {
    /// A read that the cache could not answer asks the database, on [`Self::readers`]: at
    /// once refused while its breaker is open; its answer tells the breaker. A read whose
    /// connection the server closed under it is asked again, on a connection that answers
    /// (see [`Readers`]): a restart of the database, or an operator dropping every
    /// connection, is not seen by the reads in flight. (The wait is bounded by the caller.)
    /// `query` should hold its connection no longer than the database works: rows are
    /// checked into users after it, letting the next read in. `table` names the statement's
    /// span (`SELECT users`) for an exporter.
    pub(super) async fn asked<T, Q>(
        &self,
        table: &'static str,
        query: impl Fn() -> Q,
    ) -> Result<T, CoreError>
    where
        Q: std::future::Future<Output = Result<T, CoreError>>,
    {
        self.guard.admit()?;
        let span = statement(tracing::Span::current().id(), "SELECT", table);
        let mut result = query().instrument(span.clone()).await;
        for _ in 0..ASKED_AGAIN {
            if !matches!(&result, Err(CoreError::Unavailable(m)) if m == LOST) {
                break;
            }
            self.readers.lost_one();
            result = query().instrument(span.clone()).await;
        }
        // Lost each time, on connections that had just answered or were just made: whatever
        // ends them (a link that resets every connection) is the database being unreachable.
        if matches!(&result, Err(CoreError::Unavailable(m)) if m == LOST) {
            result = Err(CoreError::Unavailable(UNREACHABLE.to_owned()));
        }
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
        tx.commit().await.map_err(db_error)
    }

    /// The live users with these ids, in their order: from the in-process copy, then one
    /// gathered read of the rest.
    pub(super) async fn find(
        &self,
        ids: &[UserId],
        caller: &str,
    ) -> Result<Vec<Option<Arc<Rendered>>>, CoreError> {
        let keys: Vec<Key> = ids.iter().map(|id| Key::Id(*id)).collect();
        let mut found = self.cache.local(&keys, caller);
        let (at, missing): (Vec<usize>, Vec<Key>) = keys
            .into_iter()
            .zip(&found)
            .enumerate()
            .filter_map(|(i, (key, u))| u.is_none().then_some((i, key)))
            .unzip();
        if !missing.is_empty() {
            let fetched = self.reads.find(self, missing, caller).await?;
            for (slot, u) in at.into_iter().zip(fetched) {
                if let Some(slot) = found.get_mut(slot) {
                    *slot = u;
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn get(&self, id: UserId, caller: &str) -> Result<Arc<Rendered>, CoreError> {
        self.find(&[id], caller)
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| CoreError::UserNotFound(id.to_string()))
    }

    pub(super) async fn get_by_email(
        &self,
        email: &Email,
        caller: &str,
    ) -> Result<Arc<Rendered>, CoreError> {
        let key = Key::Email(email.clone());
        if let Some(u) = self
            .cache
            .local(std::slice::from_ref(&key), caller)
            .pop()
            .flatten()
        {
            return Ok(u);
        }
        self.reads
            .find(self, vec![key], caller)
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| CoreError::UserNotFound(email.to_string()))
    }
}

/// A statement's span, for an exporter: `db.system=postgresql`, named `OPERATION table`, a
/// child of `parent` (the current span's id for a request's own statement).
pub(super) fn statement(
    parent: Option<tracing::Id>,
    operation: &'static str,
    table: &'static str,
) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    crate::otel_span!(
        parent: parent,
        "postgresql",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = operation,
        db.collection.name = table,
    )
}

/// What a write did in its transaction: its reply, and the users it changed (whose cached
/// copies are stale, each with the e-mail addresses to drop; none when it changed nothing).
pub(super) struct Written {
    pub(super) reply: Reply,
    pub(super) stale: Vec<(UserId, Vec<Email>)>,
}

impl Written {
    /// A write that changed nothing cached.
    pub(super) fn unchanged(reply: Reply) -> Self {
        Self {
            reply,
            stale: Vec::new(),
        }
    }
}

impl Db {
    /// Runs a write: takes its request key (a key answered before gets that same answer, and
    /// nothing is done), runs `body` in the transaction, records the reply with it, commits,
    /// then drops what the write made stale from the cache. A write that fails is rolled back
    /// before its error is answered: left to the pool, the rollback would come later, and a
    /// retry at once would find the key's lock still held and get a 409.
    pub(super) async fn write(
        &self,
        keyed: Option<&Keyed>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<Written, CoreError>,
    ) -> Result<Reply, CoreError> {
        // Both boxed: each future is kilobytes, and every read's future would be as large
        // (the operations' dispatch holds the largest of its arms), moved whole at every
        // layer on each request.
        let written = Box::pin(self.transaction(keyed, body))
            .instrument(statement(tracing::Span::current().id(), "BEGIN", "users"))
            .await?;
        // A write that changed a user added its events: the publisher has work.
        if !written.stale.is_empty() {
            self.signal.raise();
        }
        Box::pin(self.cache.invalidate_all(written.stale)).await;
        Ok(written.reply)
    }

    /// The transaction of [`Self::write`]; a replayed key changes nothing.
    async fn transaction(
        &self,
        keyed: Option<&Keyed>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<Written, CoreError>,
    ) -> Result<Written, CoreError> {
        let mut tx = match ledger::begin(&self.pool, &self.keys, keyed).await? {
            Begun::Fresh(tx) => tx,
            Begun::Replay(reply) => return Ok(Written::unchanged(reply)),
        };
        let done = async {
            let written = body(&mut tx).await?;
            ledger::record(&mut tx, &self.keys, keyed, &written.reply).await?;
            Ok::<_, CoreError>(written)
        }
        .await;
        match done {
            Ok(written) => {
                self.commit(tx).await?;
                Ok(written)
            }
            Err(e) => {
                // Should the rollback fail, the connection is closed, which ends it too.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}
