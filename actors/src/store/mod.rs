//! The users table and everything that reaches it. Requests reach it through a [`Store`] on
//! the caller's own task, with no actor hop: reads (cache first, then the pool), and every
//! write but a create, which runs on a task of its own on the runtime's worker pool, so
//! database work runs concurrently over the sqlx pool. Only creates cross the UserStore
//! actor's mailbox: it commits those that arrive together as one group ([`group_commit`]).
//! It also keeps the ledger of applied requests pruned, and erases users deleted long ago.

mod creates;
mod edits;
mod erasure;
mod error;
mod export;
pub(crate) use error::db_error;
mod batch;
mod db;
mod group_commit;
mod guard;
mod history;
pub mod ledger;
mod listing;
mod operations;
mod outbox;
mod payments;
mod readers;
mod reads;
mod rekey;
mod rows;
mod search;
mod writes;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture,
};
use futures::FutureExt;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::cache::UserCache;
use crate::crypto::BillingKeys;
use user_domain::NewUser;
use user_domain::call::{CallContext, Reply};
use user_domain::error::CoreError;
use user_domain::events::Origin;
use user_domain::request::Request;

pub use guard::{HUNG_AFTER, PgGuard};
pub use outbox::{NOTIFY_CHANNEL, OutboxSignal};
pub use readers::{Readers, TRUSTED_IDLE};
pub use rekey::{RekeyStats, rekey};
/// The store's reads, for the load bench's ceilings: PostgreSQL runs the same statements.
pub use rows::{
    BY_EMAIL as USER_BY_EMAIL, BY_ID as USER_BY_ID, BY_IDS as USERS_BY_IDS, USER_COLUMNS,
};
pub use search::{FURTHER as SEARCH_FURTHER, INSIDE as SEARCH_INSIDE, WALK as SEARCH_WALK};

/// What every request reaches the data through. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: db::Db,
}

impl Store {
    /// Reads go through `cache`; writes invalidate it after they commit. The billing fields
    /// are sealed with `keys` in the users table. What needs the database passes `guard`.
    pub fn new(pool: PgPool, cache: UserCache, keys: Arc<BillingKeys>, guard: PgGuard) -> Self {
        Self {
            db: db::Db {
                signal: OutboxSignal::new(pool.clone()),
                readers: readers::Readers::sharing(pool.clone()),
                pool,
                cache,
                keys,
                guard,
                deadline: None,
                reads: Default::default(),
            },
        }
    }

    /// Reads the cache could not answer (lookups, listings, searches, exports) go to
    /// `readers`, a pool of their own (see `user_service::db::readers`); by default they
    /// share the one pool.
    pub fn reading_from(mut self, readers: Readers) -> Self {
        self.db.readers = readers;
        self
    }

    /// How requests wait for the database.
    pub fn guard(&self) -> &PgGuard {
        &self.db.guard
    }

    /// A read, on the caller's task. A panic fails this request only.
    pub fn read(
        &self,
        ctx: CallContext,
        request: Request,
    ) -> impl Future<Output = Result<Reply, CoreError>> + use<> {
        AssertUnwindSafe(operations::execute(self.db.clone(), ctx, request))
            .catch_unwind()
            .map(|done| {
                done.unwrap_or_else(|_| Err(CoreError::Internal("a read panicked".to_owned())))
            })
    }

    /// A write, on a task of its own on the worker pool: it goes on if the caller stops
    /// waiting ([`abandon_if_hung`]), and a panic there fails this request only (INTERNAL),
    /// never a worker. Creates go to the [`UserStore`] instead, which groups them.
    pub async fn write(&self, ctx: CallContext, request: Request) -> Result<Reply, CoreError> {
        // The deadline is checked where a write would commit, never by dropping the work
        // mid-way: a commit once started finishes, and so does its cache invalidation.
        let db = db::Db {
            deadline: ctx.deadline,
            ..self.db.clone()
        };
        let work = async move {
            #[cfg(any(test, feature = "fault-injection"))]
            crate::fault::panic_in_write_if_asked(ctx.correlation_id.as_str());
            operations::execute(db, ctx, request).await
        };
        tokio::spawn(abandon_if_hung(work).instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|e| {
                Some(Err(CoreError::Internal(format!(
                    "a write's task failed: {e}"
                ))))
            })
            .unwrap_or_else(|| {
                Err(CoreError::Unavailable(
                    "the database stopped answering".to_owned(),
                ))
            })
    }
}

/// The creates' actor: creates that arrive while others are being written wait for the next
/// group and are committed together ([`group_commit`]). Ordering them into groups is state
/// only one place may own, hence an actor; no other request passes through it.
///
/// It also prunes the ledger of applied requests: the ledger is what the store's writes
/// leave, so its upkeep is the store's, and in this actor's context it is supervised (a
/// panic there restarts it) and ends with the service. Every instance prunes, whether
/// RabbitMQ is up or not (an age-bound `DELETE`: two at once do no harm).
pub struct UserStore {
    db: db::Db,
    waiting: Vec<group_commit::Pending>,
    groups_running: usize,
    /// Entries of the ledger older than this are deleted (`IDEMPOTENCY_RETENTION_HOURS`).
    ledger_retention: Duration,
    /// Users deleted this long ago are erased (`ERASE_DELETED_AFTER_DAYS`); none when unset.
    erase_deleted_after: Option<Duration>,
    /// Entries of the users' history older than this are deleted (`AUDIT_RETENTION_DAYS`).
    history_retention: Duration,
}

/// Groups of creates written at the same time: while some wait for their round trips and
/// flush, others are being written. Measured on 2 cores with 32 callers (`benches/load`):
/// 2 groups gave 3.0k creates/s, 4 gave 4.2k, 8 gave 3.4k (more, smaller flushes).
const GROUPS_RUNNING: usize = 4;

/// How often the ledger of applied requests and the users' history are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long a user's history is kept unless told (`AUDIT_RETENTION_DAYS`).
const HISTORY_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

impl UserStore {
    pub fn new(store: Store, ledger_retention: Duration) -> Self {
        Self {
            db: store.db,
            waiting: Vec::new(),
            groups_running: 0,
            ledger_retention,
            erase_deleted_after: None,
            history_retention: HISTORY_RETENTION,
        }
    }

    /// Keeps the users' history this long.
    pub fn keeping_history_for(self, retention: Duration) -> Self {
        Self {
            history_retention: retention,
            ..self
        }
    }

    /// Also erases the users deleted longer than `after` ago, in the background.
    pub fn erasing_deleted_after(self, after: Option<Duration>) -> Self {
        Self {
            erase_deleted_after: after,
            ..self
        }
    }

    /// Queues a create for the next group; answers when its group has.
    fn queue_create(
        &mut self,
        ctx: &mut Context<Self>,
        Create {
            ctx: call,
            new,
            span,
        }: Create,
    ) -> ResponseFuture<Result<Reply, CoreError>> {
        let (answer, answered) = oneshot::channel();
        self.waiting.push(group_commit::Pending {
            keyed: ledger::Keyed::of_create(&call, &new),
            new,
            corr: Origin::of(&call),
            deadline: call.deadline,
            answer,
            span,
        });
        self.start_groups(ctx);
        Box::pin(async move {
            answered
                .await
                .unwrap_or_else(|_| Err(CoreError::Internal("a create went unanswered".to_owned())))
        })
    }

    fn start_groups(&mut self, ctx: &mut Context<Self>) {
        while self.groups_running < GROUPS_RUNNING && !self.waiting.is_empty() {
            let size = self.waiting.len().min(group_commit::MAX_GROUP);
            let members: Vec<_> = self.waiting.drain(..size).collect();
            self.groups_running += 1;
            let running = tokio::spawn(abandon_if_hung(group_commit::create_all(
                self.db.clone(),
                members,
            )));
            let done = async move {
                // A panic in the group fails its creates (their callers are told), not the actor.
                let _ = running.await;
            };
            ctx.spawn(done.into_actor(self).map(|_, act, ctx| {
                act.groups_running -= 1;
                act.start_groups(ctx);
            }));
        }
    }
}

impl Actor for UserStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Creates only pass through to the queue of the next group; a deep mailbox keeps
        // edges from waiting on each other.
        ctx.set_mailbox_capacity(4096);
        for (table, retention) in [
            (Expiring::Ledger, self.ledger_retention),
            (Expiring::History, self.history_retention),
        ] {
            ctx.spawn(keep_pruned(self.db.pool.clone(), table, retention).into_actor(self));
        }
        if let Some(after) = self.erase_deleted_after {
            ctx.spawn(erasure::erase_deleted(self.db.clone(), after).into_actor(self));
        }
    }
}

/// The tables whose rows expire by their `created_at`.
#[derive(Debug, Clone, Copy)]
enum Expiring {
    /// `applied_requests` (`IDEMPOTENCY_RETENTION_HOURS`).
    Ledger,
    /// `user_history` (`AUDIT_RETENTION_DAYS`).
    History,
}

/// Deletes the rows of `table` older than `retention`.
async fn expire(pool: &PgPool, table: Expiring, retention: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let sql = match table {
        Expiring::Ledger => "DELETE FROM applied_requests WHERE created_at < $1",
        Expiring::History => "DELETE FROM user_history WHERE created_at < $1",
    };
    let deleted = sqlx::query(sql)
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    if deleted > 0 {
        tracing::info!(deleted, ?table, "pruned expired rows");
    }
    Ok(deleted)
}

/// Prunes `table` now and every [`PRUNE_EVERY`]; a database silent for [`HUNG_AFTER`] is
/// not waited on past it.
async fn keep_pruned(pool: PgPool, table: Expiring, retention: Duration) {
    loop {
        match tokio::time::timeout(HUNG_AFTER, expire(&pool, table, retention)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, ?table, "could not prune"),
            Err(_) => tracing::warn!(
                ?table,
                "could not prune: the database did not answer for {HUNG_AFTER:?}"
            ),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// Create one user, committed with the others of its group.
#[derive(Message)]
#[rtype(result = "Result<Reply, CoreError>")]
pub struct Create {
    pub ctx: CallContext,
    pub new: NewUser,
    /// The request's span, for an exporter: its group's statement is a child of the first
    /// create's span and follows from the others'.
    pub span: tracing::Span,
}

impl Create {
    pub fn new(ctx: CallContext, new: NewUser) -> Self {
        let span = crate::telemetry::request_span();
        Self { ctx, new, span }
    }
}

impl Handler<Create> for UserStore {
    type Result = ResponseFuture<Result<Reply, CoreError>>;

    fn handle(&mut self, msg: Create, ctx: &mut Self::Context) -> Self::Result {
        self.queue_create(ctx, msg)
    }
}

/// A write's task outlives its caller's wait (bounded by the [`PgGuard`]): it commits only
/// before its deadline, and a commit once started finishes, with its cache invalidation. A
/// server that has not answered for [`HUNG_AFTER`] never will: the task is dropped then, so
/// nothing waits on it for good (a transaction dropped uncommitted is rolled back).
async fn abandon_if_hung<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    let done = tokio::time::timeout(HUNG_AFTER, work).await.ok();
    if done.is_none() {
        tracing::warn!("a write was abandoned: the database did not answer for {HUNG_AFTER:?}");
    }
    done
}

#[cfg(test)]
mod tests;
