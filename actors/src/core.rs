//! The dispatcher both edges call: parse, authorise, hand to the owning actor.

use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;
use user_domain::call::{CallContext, Reply};
use user_domain::error::CoreError;
use user_domain::operations::Permission;
use user_domain::request::{Method, ParamForm, Request};

use crate::limits::RateLimits;
use crate::store::{Create, Store, UserStore};
use crate::supervisor::ActorHandle;

/// How long a request waits for a UserStore that is restarting before it answers 503.
const STORE_PATIENCE: Duration = Duration::from_secs(2);

/// The one entry point for every operation. Cheap to clone; shared by both edges.
#[derive(Clone)]
pub struct Core {
    /// Reads run on the caller's task, other writes on a task of their own…
    store: Store,
    /// …but creates go to the actor that groups them.
    writer: ActorHandle<UserStore>,
    limits: RateLimits,
}

impl Core {
    pub fn new(store: Store, writer: ActorHandle<UserStore>, limits: RateLimits) -> Self {
        Self {
            store,
            writer,
            limits,
        }
    }

    /// Counts the request against the caller's rate limit, decodes `params` for `method`
    /// and executes it.
    pub async fn call(
        &self,
        ctx: CallContext,
        method: Method,
        params: Value,
        form: ParamForm,
    ) -> Result<Reply, CoreError> {
        #[cfg(feature = "fault-injection")]
        crate::fault::panic_if_asked(ctx.correlation_id.as_str());
        self.limits
            .check(&ctx.caller.name)
            .instrument(crate::otel_span!("rate limit", caller = %ctx.caller.name))
            .await?;
        let request = Request::parse(method, params, form)?;
        let span = crate::otel_span!("core", otel.name = method.as_str());
        self.execute(ctx, request).instrument(span).await
    }

    /// No request waits for PostgreSQL past its patience, whatever the database does
    /// ([`crate::store::PgGuard`]): reads are bounded here (they ask the breaker only if the
    /// cache misses), writes in [`Self::write`].
    pub async fn execute(&self, ctx: CallContext, request: Request) -> Result<Reply, CoreError> {
        authorize(&ctx, &request)?;
        let result = match request.method().is_read() {
            true => {
                self.store
                    .guard()
                    .bound(self.store.read(ctx, request))
                    .await
            }
            false => self.write(ctx, request).await,
        };
        if let Err(CoreError::Internal(detail)) = &result {
            // Callers only see "internal error"; the detail is for operators.
            tracing::error!(error = %detail, "internal error");
        }
        result
    }

    /// Every write needs the database: refused at once while its breaker is open, else
    /// waited for as long as the patience. Its task may go on after the caller's answer,
    /// but commits only before the deadline set here; a 503 is never an acknowledgement,
    /// and a retry with the same request key is safe (the ledger). Only a create crosses
    /// the UserStore's mailbox, to be grouped with others; every other write runs on a
    /// task of its own ([`Store::write`]).
    async fn write(&self, mut ctx: CallContext, request: Request) -> Result<Reply, CoreError> {
        let guard = &self.store.guard().writing(request.writes());
        guard.admit()?;
        let Request::Create(new) = request else {
            let deadline = guard.deadline();
            ctx.deadline = Some(ctx.deadline.map_or(deadline, |at| at.min(deadline)));
            return guard.run(self.store.write(ctx, request)).await;
        };
        let writer = self.writer.ready(STORE_PATIENCE).await.ok_or_else(|| {
            CoreError::Unavailable("user store is restarting; nothing was done".to_owned())
        })?;
        let deadline = guard.deadline();
        ctx.deadline = Some(ctx.deadline.map_or(deadline, |at| at.min(deadline)));
        guard
            .run(async {
                writer.send(Create::new(ctx, new)).await.map_err(|e| {
                    CoreError::Unavailable(format!("user store is restarting ({e})"))
                })?
            })
            .await
    }
}

/// The permission a request needs comes from the operation table, raised by what the request
/// asks for (credentials).
fn authorize(ctx: &CallContext, request: &Request) -> Result<(), CoreError> {
    let needed = request.permission();
    if ctx.caller.rights.allow(needed) {
        return Ok(());
    }
    let name = &ctx.caller.name;
    Err(CoreError::Forbidden(match needed {
        Permission::CredentialReader => format!("caller '{name}' may not read credentials"),
        Permission::Exporter => format!(
            "caller '{name}' may not export users (EXPORT_READERS or CREDENTIAL_READERS, with its own key)"
        ),
        Permission::AuditReader => {
            format!("caller '{name}' may not read users' history (AUDIT_READERS, with its own key)")
        }
        Permission::Caller => format!("caller '{name}' may not call this"),
    }))
}
