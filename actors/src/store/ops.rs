//! Every operation against PostgreSQL. Reads go straight to the pool; writes load the user
//! under a row lock, apply a pure [`edits`] function, and save the user and its events in
//! one transaction.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Uuid;
use tokio::time::Instant;

use super::edits::{self, Edit};
use super::error::is_email_taken;
use super::{outbox, rows};
use crate::cache::UserCache;
use crate::core::{CallContext, Reply};
use crate::domain::{CorrelationId, Email, NewUser, Timestamp, User, UserId};
use crate::error::CoreError;
use crate::events::{Event, EventType};
use crate::request::{Payment, Request};
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
    let key = ctx.request_key.as_deref();
    match req {
        Request::Create(new) => create(&db, new, key.map(str::to_owned), corr)
            .await
            .map(|u| Reply::created(views::user(&u))),
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
            let u = modify(&db, id, key, |u| Ok(edits::login(u, at, ip, corr))).await?;
            Ok(Reply::ok(views::user(&u)))
        }
        Request::Update { id, patch } => {
            let u = modify(&db, id, key, |u| edits::update(u, &patch, corr)).await?;
            Ok(Reply::ok(views::user(&u)))
        }
        Request::Delete { id } => delete(&db, id, key, corr)
            .await
            .map(|()| Reply::no_content()),
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
        Request::BatchCreate { users } => batch_create(&db, users, key, corr).await.map(Reply::ok),
        Request::GetBillingInfo { id } => Ok(Reply::ok(views::billing(&db.get(id, caller).await?))),
        Request::UpdateBillingInfo { id, patch } => {
            let u = modify(&db, id, key, |u| edits::billing(u, &patch, corr)).await?;
            Ok(Reply::ok(views::billing(&u)))
        }
        Request::RecordPayment { id, payment } => record_payment(&db, id, payment, corr).await,
        Request::GetPreferences { id } => {
            Ok(Reply::ok(views::preferences(&db.get(id, caller).await?)))
        }
        Request::UpdatePreferences { id, patch } => {
            let u = modify(&db, id, key, |u| edits::preferences(u, &patch, corr)).await?;
            Ok(Reply::ok(views::preferences(&u)))
        }
        Request::GetPrivacySettings { id } => Ok(Reply::ok(views::privacy_settings(
            &db.get(id, caller).await?,
        ))),
        Request::UpdatePrivacySettings { id, patch } => {
            let u = modify(&db, id, key, |u| edits::privacy(u, &patch, corr)).await?;
            Ok(Reply::ok(views::privacy_settings(&u)))
        }
    }
}

impl Db {
    /// Commits, unless the request's deadline has passed: then nothing was done, truly.
    async fn commit(&self, tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), CoreError> {
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

/// Loads the user under a row lock, applies `edit`, and saves the result with its events.
/// An edit without events changed nothing: nothing is written and the user is returned as is.
/// A request `key` makes the edit happen once: the same request delivered again finds its
/// key on the user and changes nothing (a login is not recorded twice).
async fn modify(
    db: &Db,
    id: UserId,
    key: Option<&str>,
    edit: impl FnOnce(&User) -> Result<Edit, CoreError>,
) -> Result<User, CoreError> {
    let mut tx = db.pool.begin().await?;
    let current = rows::fetch_for_update(&mut tx, id).await?;
    if let Some(key) = key {
        let first = sqlx::query(
            "UPDATE users SET last_request_key = $2
             WHERE id = $1 AND last_request_key IS DISTINCT FROM $2",
        )
        .bind(id.as_uuid())
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(current);
        }
    }
    let Edit { mut user, events } = edit(&current)?;
    if events.is_empty() {
        return Ok(current);
    }
    user.updated_at = Timestamp::now();
    save(&mut tx, &user, &events).await?;
    db.commit(tx).await?;
    db.cache
        .invalidate(id, &[&current.email, &user.email])
        .await;
    Ok(user)
}

async fn save(tx: &mut sqlx::PgConnection, user: &User, events: &[Event]) -> Result<(), CoreError> {
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
    key: Option<String>,
    corr: &CorrelationId,
) -> Result<User, CoreError> {
    match insert_users(db, vec![(new, key)], corr).await?.pop() {
        Some(Ok(user)) => Ok(user),
        Some(Err(email)) => Err(CoreError::EmailTaken(email)),
        None => Err(CoreError::Internal("insert returned nothing".to_owned())),
    }
}

/// Inserts users in one statement and one transaction with their USER_CREATED events.
/// Each input gets `Ok(user)`, or `Err(email)` when its address is already taken (by a live
/// user or by an earlier entry of the same batch). An input whose request key already
/// created that user (a redelivered or retried request) gets the user back, with no second
/// event.
async fn insert_users(
    db: &Db,
    new: Vec<(NewUser, Option<String>)>,
    corr: &CorrelationId,
) -> Result<Vec<Result<User, String>>, CoreError> {
    let (new, keys): (Vec<NewUser>, Vec<Option<String>>) = new.into_iter().unzip();
    let now = Timestamp::now();
    let ids: Vec<UserId> = new.iter().map(|_| UserId::generate()).collect();
    let uuids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
    let emails: Vec<&str> = new.iter().map(|n| n.email.as_ref()).collect();
    let names: Vec<&str> = new.iter().map(|n| n.name.as_ref()).collect();
    let hashes: Vec<&str> = new.iter().map(|n| n.password.as_ref()).collect();
    let mut tx = db.pool.begin().await?;
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, email, name, password_hash, request_key, created_at, updated_at)
         SELECT id, email, name, hash, key, $6, $6
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                AS t(id, email, name, hash, key)
         ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING
         RETURNING id",
    )
    .bind(&uuids)
    .bind(&emails)
    .bind(&names)
    .bind(&hashes)
    .bind(&keys)
    .bind(now.as_datetime())
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let retried: Vec<&str> = keys
        .iter()
        .zip(&uuids)
        .filter(|(_, id)| !inserted.contains(id))
        .filter_map(|(k, _)| k.as_deref())
        .collect();
    let mut earlier = rows::fetch_by_request_keys(&mut *tx, &retried).await?;
    let mut events = Vec::with_capacity(inserted.len());
    let mut results = Vec::with_capacity(new.len());
    for ((n, id), key) in new.into_iter().zip(ids).zip(keys) {
        if !inserted.contains(&id.as_uuid()) {
            let replay = key
                .and_then(|k| earlier.remove(&k))
                .filter(|u| u.email == n.email);
            results.push(replay.ok_or_else(|| n.email.to_string()));
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
    outbox::append(&mut tx, &events).await?;
    db.commit(tx).await?;
    // Nothing can be cached for a new user; the invalidation tells every instance anyway,
    // as for every write.
    let created = results
        .iter()
        .flatten()
        .filter(|u| inserted.contains(&u.id.as_uuid()));
    db.cache
        .invalidate_all(created.map(|u| (u.id, vec![u.email.clone()])).collect())
        .await;
    Ok(results)
}

/// Soft-deletes once: the same request (by its key) delivered again answers as the first did.
async fn delete(
    db: &Db,
    id: UserId,
    key: Option<&str>,
    corr: &CorrelationId,
) -> Result<(), CoreError> {
    let mut tx = db.pool.begin().await?;
    let email: Option<String> = sqlx::query_scalar(
        "UPDATE users SET deleted_at = now(), updated_at = now(), deleted_by = $2
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING email",
    )
    .bind(id.as_uuid())
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(email) = email else {
        let replay: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deleted_by = $2)",
        )
        .bind(id.as_uuid())
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        return if replay {
            Ok(())
        } else {
            Err(CoreError::UserNotFound(id.to_string()))
        };
    };
    outbox::append(
        &mut tx,
        &[Event::new(EventType::UserDeleted, id, corr, json!({}))],
    )
    .await?;
    db.commit(tx).await?;
    let email = Email::parse(&email).ok();
    db.cache
        .invalidate(id, &email.iter().collect::<Vec<_>>())
        .await;
    Ok(())
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

/// Item `i` of a batch with request key `k` carries the key `k#i`.
async fn batch_create(
    db: &Db,
    items: Vec<Result<NewUser, CoreError>>,
    key: Option<&str>,
    corr: &CorrelationId,
) -> Result<Value, CoreError> {
    let requested = items.len();
    // Valid items go to the database in one insert; the rest are answered from here.
    let mut results: Vec<Value> = Vec::with_capacity(requested);
    let mut valid = Vec::new();
    let mut valid_at = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(new) => {
                valid_at.push(index);
                valid.push((new, key.map(|k| format!("{k}#{index}"))));
                results.push(Value::Null);
            }
            Err(e) => results.push(json!({"index": index, "status": "invalid", "error": e.body()})),
        }
    }
    let inserted = insert_users(db, valid, corr).await?;
    let (mut created, mut conflicts) = (0, 0);
    for (index, outcome) in valid_at.into_iter().zip(inserted) {
        results[index] = match outcome {
            Ok(user) => {
                created += 1;
                json!({"index": index, "status": "created", "id": user.id})
            }
            Err(email) => {
                conflicts += 1;
                let error = CoreError::EmailTaken(email).body();
                json!({"index": index, "status": "conflict", "error": error})
            }
        };
    }
    Ok(json!({
        "results": results,
        "stats": {"requested": requested, "created": created, "conflict": conflicts,
                  "invalid": requested - created - conflicts},
    }))
}

/// Adds a payment to the user's totals once: the payment row and the new totals commit
/// together, and a payment id seen before changes nothing.
async fn record_payment(
    db: &Db,
    id: UserId,
    p: Payment,
    corr: &CorrelationId,
) -> Result<Reply, CoreError> {
    let mut tx = db.pool.begin().await?;
    let current = rows::fetch_for_update(&mut tx, id).await?;
    let currency = p
        .currency
        .clone()
        .or_else(|| current.billing_info.as_ref().map(|b| b.currency.clone()))
        .unwrap_or_default();
    let paid_at = p.paid_at.unwrap_or_else(Timestamp::now);
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO payments (payment_id, user_id, amount_minor, currency, paid_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (payment_id) DO NOTHING
         RETURNING user_id",
    )
    .bind(p.payment_id.as_ref())
    .bind(id.as_uuid())
    .bind(p.amount.minor())
    .bind(currency.as_ref())
    .bind(paid_at.as_datetime())
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        // Seen before: a replay for the same user answers with the current totals.
        let owner: Uuid = sqlx::query_scalar("SELECT user_id FROM payments WHERE payment_id = $1")
            .bind(p.payment_id.as_ref())
            .fetch_one(&mut *tx)
            .await?;
        return if owner == id.as_uuid() {
            Ok(Reply::ok(views::billing(&current)))
        } else {
            Err(CoreError::invalid(
                "paymentId",
                "is already recorded for another user",
            ))
        };
    }
    let Edit { mut user, events } = edits::payment(
        &current,
        &Payment {
            paid_at: Some(paid_at),
            ..p
        },
        corr,
    )?;
    user.updated_at = Timestamp::now();
    save(&mut tx, &user, &events).await?;
    db.commit(tx).await?;
    db.cache.invalidate(id, &[&user.email]).await;
    Ok(Reply::created(views::billing(&user)))
}
