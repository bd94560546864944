//! The users table and everything that reaches it. Reads run on the caller's task through a
//! [`Store`] (cache first, then the pool): no actor hop. Writes go to the UserStore actor,
//! whose handler hands each one to a task on the runtime's worker pool, so database work runs
//! concurrently over the sqlx pool; the actor itself is never a queue that requests wait in.

mod creates;
mod edits;
mod error;
pub(crate) use error::db_error;
mod batch;
mod db;
mod group_commit;
mod guard;
pub mod ledger;
mod operations;
mod outbox;
mod payments;
mod rekey;
mod rows;
mod writes;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture,
};
use futures::FutureExt;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::cache::UserCache;
use crate::crypto::BillingKeys;
use user_domain::call::{CallContext, Reply};
use user_domain::error::CoreError;
use user_domain::request::Request;

pub use guard::{HUNG_AFTER, PgGuard};
pub use outbox::{NOTIFY_CHANNEL, OutboxSignal};
pub use rekey::{RekeyStats, rekey};

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
                pool,
                cache,
                keys,
                guard,
                deadline: None,
            },
        }
    }

    /// How requests wait for the database.
    pub fn guard(&self) -> &PgGuard {
        &self.db.guard
    }

    /// A read, on the caller's task. A panic fails this request only.
    pub async fn read(&self, ctx: CallContext, request: Request) -> Result<Reply, CoreError> {
        let work = operations::execute(self.db.clone(), ctx, request);
        AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(CoreError::Internal("a read panicked".to_owned())))
    }
}

/// The writer: every write runs under it. Creates that arrive while others are being
/// written wait for the next group and are committed together ([`group_commit`]).
pub struct UserStore {
    db: db::Db,
    waiting: Vec<group_commit::Pending>,
    groups_running: usize,
}

/// Groups of creates written at the same time: while some wait for their round trips and
/// flush, others are being written. Measured on 2 cores with 32 callers (`benches/load`):
/// 2 groups gave 3.0k creates/s, 4 gave 4.2k, 8 gave 3.4k (more, smaller flushes).
const GROUPS_RUNNING: usize = 4;

impl UserStore {
    pub fn new(store: Store) -> Self {
        Self {
            db: store.db,
            waiting: Vec::new(),
            groups_running: 0,
        }
    }

    /// Queues a create for the next group; answers when its group has.
    fn queue_create(
        &mut self,
        ctx: &mut Context<Self>,
        call: CallContext,
        new: user_domain::NewUser,
    ) -> ResponseFuture<Result<Reply, CoreError>> {
        let (answer, answered) = oneshot::channel();
        self.waiting.push(group_commit::Pending {
            keyed: ledger::Keyed::of_create(&call, &new),
            new,
            corr: call.correlation_id,
            deadline: call.deadline,
            answer,
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
        // Requests only pass through; a deep mailbox keeps edges from waiting on each other.
        ctx.set_mailbox_capacity(4096);
    }
}

/// Run one request against the store.
#[derive(Message)]
#[rtype(result = "Result<Reply, CoreError>")]
pub struct Execute {
    pub ctx: CallContext,
    pub request: Request,
}

impl Handler<Execute> for UserStore {
    type Result = ResponseFuture<Result<Reply, CoreError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        let Execute { ctx: call, request } = msg;
        let request = match request {
            Request::Create(new) => return self.queue_create(ctx, call, new),
            other => other,
        };
        // The deadline is checked where a write would commit, never by dropping the work
        // mid-way: a commit once started finishes, and so does its cache invalidation.
        let db = db::Db {
            deadline: call.deadline,
            ..self.db.clone()
        };
        let work = operations::execute(db, call, request).instrument(tracing::Span::current());
        Box::pin(async move {
            // A panic inside the task fails this one request, not the actor.
            tokio::spawn(abandon_if_hung(work))
                .await
                .unwrap_or_else(|e| {
                    Some(Err(CoreError::Internal(format!("store task failed: {e}"))))
                })
                .unwrap_or_else(|| {
                    Err(CoreError::Unavailable(
                        "the database stopped answering".to_owned(),
                    ))
                })
        })
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
