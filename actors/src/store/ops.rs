//! Every operation against PostgreSQL. Reads go straight to the pool; writes load the user
//! under a row lock, apply a pure [`edits`] function, and save the user and its events in
//! one transaction; a write with a request key records its reply in the [`ledger`] in that
//! same transaction.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Uuid;
use tokio::time::Instant;

use super::edits::{self, Edit};
use super::error::is_email_taken;
use super::ledger::{self, Keyed};
use super::{outbox, payments, rows};
use crate::cache::UserCache;
use crate::core::{CallContext, Reply};
use crate::domain::{CorrelationId, Email, NewUser, Timestamp, User, UserId};
use crate::error::CoreError;
use crate::events::{Event, EventType};
use crate::request::Request;
use crate::views;

/// What every operation works with: the database, and the cache in front of it.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: PgPool,
    pub(super) cache: UserCache,
    /// The request's deadline (an RPC `expiration`): a write not committing by then is
    /// rolled back. Once a commit starts it finishes, with its invalidation.
    pub(super) deadline: Option<Instant>,
}

pub(super) async fn execute(db: Db, ctx: CallContext, req: Request) -> Result<Reply, CoreError> {
    let corr = &ctx.correlation_id;
    let caller = ctx.caller.name.as_str();
    let keyed = Keyed::new(ctx.request_key.as_deref(), &req);
    let keyed = keyed.as_ref();
    match req {
        Request::Create(new) => create(&db, new, keyed, corr).await,
        Request::Get { id, fields } => {
            let u = db.get(id, caller).await?;
            Ok(Reply::ok(views::projected(&u, fields.as_ref())))
        }
        Request::GetByEmail {
            email,
            include_credentials: true,
        } => {
            let (u, hash) = rows::fetch_credentials(&db.pool, &email)
                .await?
                .ok_or_else(|| CoreError::UserNotFound(email.to_string()))?;
            Ok(Reply::ok(views::with_credentials(&u, &hash)))
        }
        Request::GetByEmail {
            email,
            include_credentials: false,
        } => Ok(Reply::ok(views::user(
            &db.get_by_email(&email, caller).await?,
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
            let u = db.get(id, caller).await?;
            Ok(Reply::ok(if public_only {
                views::public_profile(&u)
            } else {
                views::profile(&u, options)
            }))
        }
        Request::BatchProfiles {
            ids,
            options,
            fields,
        } => {
            let view = |u: &User| match &fields {
                Some(p) => p.apply(&views::user(u)),
                None => views::profile(u, options),
            };
            batch(&db, &ids, caller, "profiles", view)
                .await
                .map(Reply::ok)
        }
        Request::BatchLookup { ids, fields } => batch(&db, &ids, caller, "data", |u| {
            views::projected(u, fields.as_ref())
        })
        .await
        .map(Reply::ok),
        Request::BatchCreate { users } => batch_create(&db, users, keyed, corr).await,
        Request::GetBillingInfo { id } => Ok(Reply::ok(views::billing(&db.get(id, caller).await?))),
        Request::UpdateBillingInfo { id, patch } => {
            let edit = |u: &User| edits::billing(u, &patch, corr);
            modify(&db, id, keyed, edit, views::billing).await
        }
        Request::RecordPayment { id, payment } => {
            payments::record(&db, id, payment, keyed, corr).await
        }
        Request::GetPreferences { id } => {
            Ok(Reply::ok(views::preferences(&db.get(id, caller).await?)))
        }
        Request::UpdatePreferences { id, patch } => {
            let edit = |u: &User| edits::preferences(u, &patch, corr);
            modify(&db, id, keyed, edit, views::preferences).await
        }
        Request::GetPrivacySettings { id } => Ok(Reply::ok(views::privacy_settings(
            &db.get(id, caller).await?,
        ))),
        Request::UpdatePrivacySettings { id, patch } => {
            let edit = |u: &User| edits::privacy(u, &patch, corr);
            modify(&db, id, keyed, edit, views::privacy_settings).await
        }
    }
}

impl Db {
    /// Commits, unless the request's deadline has passed: then nothing was done, truly.
    pub(super) async fn commit(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<(), CoreError> {
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            tx.rollback().await?;
            return Err(CoreError::Unavailable(
                "deadline passed; nothing was done".to_owned(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The live users among `ids`, from the cache where it has them.
    async fn find(&self, ids: &[UserId], caller: &str) -> Result<HashMap<UserId, User>, CoreError> {
        let (mut found, mark) = self.cache.get_many(ids, caller).await;
        let missing: Vec<UserId> = ids
            .iter()
            .filter(|id| !found.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            let fetched = rows::fetch_many(&self.pool, &missing).await?;
            self.cache
                .fill(mark, &fetched.iter().collect::<Vec<_>>(), false)
                .await;
            found.extend(fetched.into_iter().map(|u| (u.id, u)));
        }
        Ok(found)
    }

    async fn get(&self, id: UserId, caller: &str) -> Result<User, CoreError> {
        self.find(&[id], caller)
            .await?
            .remove(&id)
            .ok_or_else(|| CoreError::UserNotFound(id.to_string()))
    }

    async fn get_by_email(&self, email: &Email, caller: &str) -> Result<User, CoreError> {
        let (cached, mark) = self.cache.get_by_email(email, caller).await;
        if let Some(u) = cached {
            return Ok(u);
        }
        let u = rows::fetch_by_email(&self.pool, email)
            .await?
            .ok_or_else(|| CoreError::UserNotFound(email.to_string()))?;
        self.cache.fill(mark, &[&u], true).await;
        Ok(u)
    }
}

/// Starts a write: its transaction, or — when the request's key was answered before — that
/// same answer, returned at once by the calling function.
macro_rules! begin {
    ($db:expr, $keyed:expr) => {
        match $crate::store::ledger::begin(&$db.pool, $keyed).await? {
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
        ledger::record(&mut tx, keyed, reply).await?;
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
    let current = rows::fetch_for_update(&mut tx, id).await?;
    let Edit { mut user, events } = edit(&current)?;
    if events.is_empty() {
        let reply = Reply::ok(view(&current));
        if keyed.is_some() {
            db.finish(tx, keyed, &reply).await?;
        }
        return Ok(reply);
    }
    user.updated_at = Timestamp::now();
    save(&mut tx, &user, &events).await?;
    let reply = Reply::ok(view(&user));
    db.finish(tx, keyed, &reply).await?;
    db.cache
        .invalidate(id, &[&current.email, &user.email])
        .await;
    Ok(reply)
}

pub(super) async fn save(
    tx: &mut sqlx::PgConnection,
    user: &User,
    events: &[Event],
) -> Result<(), CoreError> {
    rows::save(&mut *tx, user).await.map_err(|e| {
        if is_email_taken(&e) {
            CoreError::EmailTaken(user.email.to_string())
        } else {
            e.into()
        }
    })?;
    outbox::append(tx, events).await?;
    Ok(())
}

async fn create(
    db: &Db,
    new: NewUser,
    keyed: Option<&Keyed>,
    corr: &CorrelationId,
) -> Result<Reply, CoreError> {
    let mut tx = begin!(db, keyed);
    let user = match insert_users(&mut tx, vec![new], corr).await?.pop() {
        Some(Ok(user)) => user,
        Some(Err(email)) => return Err(CoreError::EmailTaken(email)),
        None => return Err(CoreError::Internal("insert returned nothing".to_owned())),
    };
    let reply = Reply::created(views::user(&user));
    db.finish(tx, keyed, &reply).await?;
    invalidate_created(db, [&user]).await;
    Ok(reply)
}

/// Nothing can be cached for a new user; the invalidation tells every instance anyway, as
/// for every write.
async fn invalidate_created(db: &Db, created: impl IntoIterator<Item = &User>) {
    db.cache
        .invalidate_all(
            created
                .into_iter()
                .map(|u| (u.id, vec![u.email.clone()]))
                .collect(),
        )
        .await;
}

/// Inserts users in one statement with their USER_CREATED events, in the caller's
/// transaction. Each input gets `Ok(user)`, or `Err(email)` when its address is already
/// taken (by a live user or by an earlier entry of the same batch).
async fn insert_users(
    tx: &mut sqlx::PgConnection,
    new: Vec<NewUser>,
    corr: &CorrelationId,
) -> Result<Vec<Result<User, String>>, CoreError> {
    let now = Timestamp::now();
    let ids: Vec<UserId> = new.iter().map(|_| UserId::generate()).collect();
    let uuids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
    let emails: Vec<&str> = new.iter().map(|n| n.email.as_ref()).collect();
    let names: Vec<&str> = new.iter().map(|n| n.name.as_ref()).collect();
    let hashes: Vec<&str> = new.iter().map(|n| n.password.as_ref()).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
         SELECT id, email, name, hash, $5, $5
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
                AS t(id, email, name, hash)
         ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING
         RETURNING id",
    )
    .bind(&uuids)
    .bind(&emails)
    .bind(&names)
    .bind(&hashes)
    .bind(now.as_datetime())
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let mut events = Vec::with_capacity(inserted.len());
    let mut results = Vec::with_capacity(new.len());
    for (n, id) in new.into_iter().zip(ids) {
        if !inserted.contains(&id.as_uuid()) {
            results.push(Err(n.email.to_string()));
            continue;
        }
        let data = json!({"name": n.name, "email": n.email});
        events.push(Event::new(EventType::UserCreated, id, corr, data));
        results.push(Ok(User {
            id,
            email: n.email,
            name: n.name,
            avatar_url: None,
            is_active: true,
            last_login_at: None,
            last_login_ip: None,
            created_at: now,
            updated_at: now,
            preferences: Default::default(),
            privacy_settings: Default::default(),
            billing_info: None,
            billing_stats: Default::default(),
            metadata: Default::default(),
        }));
    }
    outbox::append(tx, &events).await?;
    Ok(results)
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
    .await?
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

/// Answers in the order asked, each id once; ids not found (or deleted) are listed as missing.
async fn batch(
    db: &Db,
    ids: &[UserId],
    caller: &str,
    key: &str,
    view: impl Fn(&User) -> Value,
) -> Result<Value, CoreError> {
    let found = db.find(ids, caller).await?;
    let mut items = Vec::with_capacity(found.len());
    let mut missing = Vec::new();
    for id in ids {
        match found.get(id) {
            Some(u) => items.push(view(u)),
            None => missing.push(id.to_string()),
        }
    }
    Ok(json!({
        key: items,
        "missing": missing,
        "stats": {"requested": ids.len(), "found": found.len(), "missing": missing.len()},
    }))
}

/// Validates each item on its own; the valid ones go to the database in one insert. A
/// request key covers the whole batch: its reply is recorded as one.
async fn batch_create(
    db: &Db,
    items: Vec<Result<NewUser, CoreError>>,
    keyed: Option<&Keyed>,
    corr: &CorrelationId,
) -> Result<Reply, CoreError> {
    let requested = items.len();
    let mut results: Vec<Value> = Vec::with_capacity(requested);
    let mut valid = Vec::new();
    let mut valid_at = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(new) => {
                valid_at.push(index);
                valid.push(new);
                results.push(Value::Null);
            }
            Err(e) => results.push(json!({"index": index, "status": "invalid", "error": e.body()})),
        }
    }
    let mut tx = begin!(db, keyed);
    let inserted = insert_users(&mut tx, valid, corr).await?;
    let (mut created, mut conflicts) = (Vec::new(), 0);
    for (index, outcome) in valid_at.into_iter().zip(inserted) {
        results[index] = match outcome {
            Ok(user) => {
                let item = json!({"index": index, "status": "created", "id": user.id});
                created.push(user);
                item
            }
            Err(email) => {
                conflicts += 1;
                let error = CoreError::EmailTaken(email).body();
                json!({"index": index, "status": "conflict", "error": error})
            }
        };
    }
    let reply = Reply::ok(json!({
        "results": results,
        "stats": {"requested": requested, "created": created.len(), "conflict": conflicts,
                  "invalid": requested - created.len() - conflicts},
    }));
    db.finish(tx, keyed, &reply).await?;
    invalidate_created(db, &created).await;
    Ok(reply)
}
