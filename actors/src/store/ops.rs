//! Every operation against PostgreSQL. Reads go straight to the pool; writes load the user
//! under a row lock, apply a pure [`edits`] function, and save the user and its events in
//! one transaction; a write with a request key records its reply in the [`ledger`] in that
//! same transaction.

use super::db_error;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;

use super::edits::{self, Edit};
use super::ledger::{self, Keyed};
use super::outbox::{self, OutboxSignal};
use super::{creates, payments, rows};
use crate::cache::UserCache;
use crate::crypto::BillingKeys;
use user_domain::call::{CallContext, Data, Reply};
use user_domain::error::CoreError;
use user_domain::events::{Event, EventType};
use user_domain::request::Request;
use user_domain::views::{self, Rendered};
use user_domain::{CorrelationId, Email, Timestamp, User, UserId};

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

pub(super) async fn execute(db: Db, ctx: CallContext, req: Request) -> Result<Reply, CoreError> {
    let corr = &ctx.correlation_id;
    let caller = ctx.caller.name.as_str();
    let keyed = Keyed::new(&ctx, &req);
    let keyed = keyed.as_ref();
    match req {
        Request::Create(new) => creates::create(&db, new, keyed.cloned(), corr.clone()).await,
        Request::Get { id, fields } => {
            let u = db.get(id, caller).await?;
            Ok(Reply::ok(match &fields {
                Some(p) => Data::Value(p.apply(&views::user(&u.user))),
                None => Data::Raw(u.json().to_owned()),
            }))
        }
        Request::GetByEmail {
            email,
            include_credentials: true,
        } => {
            let (u, hash) = db
                .asked(rows::fetch_credentials(&db.pool, &db.keys, &email))
                .await?
                .ok_or_else(|| CoreError::UserNotFound(email.to_string()))?;
            Ok(Reply::ok(views::with_credentials(&u, &hash)))
        }
        Request::GetByEmail {
            email,
            include_credentials: false,
        } => Ok(Reply::ok(Data::Raw(
            db.get_by_email(&email, caller).await?.json().to_owned(),
        ))),
        Request::Exists { id } => {
            let exists = db.find(&[id], caller).await?.contains_key(&id);
            Ok(Reply::ok(json!({ "exists": exists })))
        }
        Request::RecordLogin { id, at, ip } => {
            let edit = |u: &User| Ok(edits::login(u, at, ip, corr));
            modify(&db, id, keyed, edit, views::user).await
        }
        Request::Update { id, patch } => {
            let edit = |u: &User| edits::update(u, &patch, corr);
            modify(&db, id, keyed, edit, views::user).await
        }
        Request::Delete { id } => delete(&db, id, keyed, corr).await,
        Request::GetProfile {
            id,
            options,
            public_only,
        } => {
            let u = &db.get(id, caller).await?.user;
            match public_only {
                true => Ok(Reply::ok(views::public_profile(u))),
                false => Data::render(&views::profile(u, options)).map(Reply::ok),
            }
        }
        Request::BatchProfiles {
            ids,
            options,
            fields,
        } => {
            batch(&db, &ids, caller, "profiles", |u| match &fields {
                Some(p) => Item::Value(p.apply(&views::user(&u.user))),
                None => Item::Profile(views::profile(&u.user, options)),
            })
            .await
        }
        Request::BatchLookup { ids, fields } => {
            batch(&db, &ids, caller, "data", |u| match &fields {
                Some(p) => Item::Value(p.apply(&views::user(&u.user))),
                None => Item::Raw(u.json()),
            })
            .await
        }
        Request::BatchCreate { users } => creates::batch_create(&db, users, keyed, corr).await,
        Request::GetBillingInfo { id } => {
            Ok(Reply::ok(views::billing(&db.get(id, caller).await?.user)))
        }
        Request::UpdateBillingInfo { id, patch } => {
            let edit = |u: &User| edits::billing(u, &patch, corr);
            modify(&db, id, keyed, edit, views::billing).await
        }
        Request::RecordPayment { id, payment } => {
            payments::record(&db, id, payment, keyed, corr).await
        }
        Request::GetPreferences { id } => Ok(Reply::ok(views::preferences(
            &db.get(id, caller).await?.user,
        ))),
        Request::UpdatePreferences { id, patch } => {
            let edit = |u: &User| edits::preferences(u, &patch, corr);
            modify(&db, id, keyed, edit, views::preferences).await
        }
        Request::GetPrivacySettings { id } => Ok(Reply::ok(views::privacy_settings(
            &db.get(id, caller).await?.user,
        ))),
        Request::UpdatePrivacySettings { id, patch } => {
            let edit = |u: &User| edits::privacy(u, &patch, corr);
            modify(&db, id, keyed, edit, views::privacy_settings).await
        }
    }
}

impl Db {
    /// A read that the cache could not answer asks the database: at once refused while its
    /// breaker is open; its answer tells the breaker. (The wait is bounded by the caller.)
    async fn asked<T>(
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
    async fn find(
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

    async fn get(&self, id: UserId, caller: &str) -> Result<Arc<Rendered>, CoreError> {
        self.find(&[id], caller)
            .await?
            .remove(&id)
            .ok_or_else(|| CoreError::UserNotFound(id.to_string()))
    }

    async fn get_by_email(&self, email: &Email, caller: &str) -> Result<Arc<Rendered>, CoreError> {
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

/// Loads the user under a row lock, applies `edit`, and saves the result with its events;
/// answers with `view` of the user. An edit without events changed nothing: only its reply
/// is recorded (for a keyed request), and the user is answered as it is.
async fn modify(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    edit: impl FnOnce(&User) -> Result<Edit, CoreError>,
    view: fn(&User) -> Value,
) -> Result<Reply, CoreError> {
    let mut tx = begin!(db, keyed);
    let current = rows::fetch_for_update(&mut tx, &db.keys, id).await?;
    let Edit { mut user, events } = edit(&current)?;
    if events.is_empty() {
        let reply = Reply::ok(view(&current));
        if keyed.is_some() {
            db.finish(tx, keyed, &reply).await?;
        }
        return Ok(reply);
    }
    user.updated_at = Timestamp::now();
    save(&mut tx, &db.keys, &user, &events).await?;
    let reply = Reply::ok(view(&user));
    db.finish(tx, keyed, &reply).await?;
    db.cache
        .invalidate(id, &[&current.email, &user.email])
        .await;
    Ok(reply)
}

pub(super) async fn save(
    tx: &mut sqlx::PgConnection,
    keys: &BillingKeys,
    user: &User,
    events: &[Event],
) -> Result<(), CoreError> {
    rows::save(&mut *tx, keys, user).await?;
    outbox::append(tx, events).await?;
    Ok(())
}

/// Soft-deletes the live user; answers 204.
async fn delete(
    db: &Db,
    id: UserId,
    keyed: Option<&Keyed>,
    corr: &CorrelationId,
) -> Result<Reply, CoreError> {
    let mut tx = begin!(db, keyed);
    let email: String = sqlx::query_scalar(
        "UPDATE users SET deleted_at = now(), updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING email",
    )
    .bind(id.as_uuid())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?
    .ok_or_else(|| CoreError::UserNotFound(id.to_string()))?;
    outbox::append(
        &mut tx,
        &[Event::new(EventType::UserDeleted, id, corr, json!({}))],
    )
    .await?;
    let reply = Reply::no_content();
    db.finish(tx, keyed, &reply).await?;
    let email = Email::parse(&email).ok();
    db.cache
        .invalidate(id, &email.iter().collect::<Vec<_>>())
        .await;
    Ok(reply)
}

/// One user in a batch answer.
enum Item<'a> {
    Raw(&'a serde_json::value::RawValue),
    Profile(views::Profile<'a>),
    Value(Value),
}

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Raw(raw) => raw.serialize(s),
            Self::Profile(p) => p.serialize(s),
            Self::Value(v) => v.serialize(s),
        }
    }
}

/// `{<key>: [users], missing, stats}`, written out directly.
struct Answer<'a> {
    key: &'static str,
    items: Vec<Item<'a>>,
    missing: Vec<&'a UserId>,
    requested: usize,
}

impl serde::Serialize for Answer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry(self.key, &self.items)?;
        m.serialize_entry("missing", &self.missing)?;
        let stats = json!({"requested": self.requested, "found": self.items.len(),
                           "missing": self.missing.len()});
        m.serialize_entry("stats", &stats)?;
        m.end()
    }
}

/// Answers in the order asked, each id once; ids not found (or deleted) are listed as
/// missing. A batch of cached users is mostly a copy of their rendered JSON.
async fn batch(
    db: &Db,
    ids: &[UserId],
    caller: &str,
    key: &'static str,
    view: impl for<'u> Fn(&'u Rendered) -> Item<'u>,
) -> Result<Reply, CoreError> {
    let found = db.find(ids, caller).await?;
    let mut answer = Answer {
        key,
        items: Vec::with_capacity(found.len()),
        missing: Vec::new(),
        requested: ids.len(),
    };
    for id in ids {
        match found.get(id) {
            Some(u) => answer.items.push(view(u)),
            None => answer.missing.push(id),
        }
    }
    Data::render(&answer).map(Reply::ok)
}
