//! The UserStore actor: owner of the users table. Its handler hands each request to a task
//! on the runtime's worker pool, so database work runs concurrently over the sqlx pool and
//! uses every core; the actor itself is never a queue that requests wait in.

mod creates;
mod edits;
mod error;
pub mod ledger;
mod ops;
mod outbox;
mod payments;
mod rekey;
mod rows;

use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use sqlx::PgPool;
use tracing::Instrument;

use crate::cache::UserCache;
use crate::core::{CallContext, Reply};
use crate::crypto::BillingKeys;
use crate::error::CoreError;
use crate::request::Request;

pub use outbox::NOTIFY_CHANNEL;
pub use rekey::{RekeyStats, rekey};

pub struct UserStore {
    db: ops::Db,
}

impl UserStore {
    /// Reads go through `cache`; writes invalidate it after they commit. The billing fields
    /// are sealed with `keys` in the users table.
    pub fn new(pool: PgPool, cache: UserCache, keys: Arc<BillingKeys>) -> Self {
        Self {
            db: ops::Db {
                pool,
                cache,
                keys,
                deadline: None,
            },
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

    fn handle(&mut self, msg: Execute, _: &mut Self::Context) -> Self::Result {
        // The deadline is checked where a write would commit, never by dropping the work
        // mid-way: a commit once started finishes, and so does its cache invalidation.
        let db = ops::Db {
            deadline: msg.ctx.deadline,
            ..self.db.clone()
        };
        let work = ops::execute(db, msg.ctx, msg.request).instrument(tracing::Span::current());
        Box::pin(async move {
            // A panic inside the task fails this one request, not the actor.
            tokio::spawn(work)
                .await
                .unwrap_or_else(|e| Err(CoreError::Internal(format!("store task failed: {e}"))))
        })
    }
}

#[cfg(test)]
mod tests;
