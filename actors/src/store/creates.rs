//! Creates: one user, or a batch in one insert, with their USER_CREATED events.

use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::types::Uuid;

use tokio::sync::oneshot;

use super::group::{self, Pending};
use super::ledger::Keyed;
use super::ops::{Db, begin};
use super::outbox;
use crate::core::Reply;
use crate::domain::{CorrelationId, NewUser, Timestamp, User, UserId};
use crate::error::CoreError;
use crate::events::{Event, EventType};

/// One create: a group of one (see [`super::group`]).
pub(super) async fn create(
    db: &Db,
    new: NewUser,
    keyed: Option<Keyed>,
    corr: CorrelationId,
) -> Result<Reply, CoreError> {
    let (answer, answered) = oneshot::channel();
    let pending = Pending {
        new,
        keyed,
        corr,
        deadline: db.deadline,
        answer,
    };
    group::create_all(db.clone(), vec![pending]).await;
    answered
        .await
        .unwrap_or_else(|_| Err(CoreError::Internal("a create went unanswered".to_owned())))
}

/// Nothing can be cached for a new user; the invalidation tells every instance anyway, as
/// for every write.
pub(super) async fn invalidate_created(db: &Db, created: impl IntoIterator<Item = &User>) {
    db.cache
        .invalidate_all(
            created
                .into_iter()
                .map(|u| (u.id, vec![u.email.clone()]))
                .collect(),
        )
        .await;
}

/// Inserts users in one statement with their USER_CREATED events (each with its request's
/// correlation id), in the caller's transaction. Each input gets `Ok(user)`, or
/// `Err(email)` when its address is already taken (by a live user or by an earlier entry).
pub(super) async fn insert_users(
    tx: &mut sqlx::PgConnection,
    new: Vec<(NewUser, &CorrelationId)>,
) -> Result<Vec<Result<User, String>>, CoreError> {
    let now = Timestamp::now();
    let ids: Vec<UserId> = new.iter().map(|_| UserId::generate()).collect();
    let uuids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
    let emails: Vec<&str> = new.iter().map(|(n, _)| n.email.as_ref()).collect();
    let names: Vec<&str> = new.iter().map(|(n, _)| n.name.as_ref()).collect();
    let hashes: Vec<&str> = new.iter().map(|(n, _)| n.password.as_ref()).collect();
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
    for ((n, corr), id) in new.into_iter().zip(ids) {
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

/// Validates each item on its own; the valid ones go to the database in one insert. A
/// request key covers the whole batch: its reply is recorded as one.
pub(super) async fn batch_create(
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
    let inserted = insert_users(&mut tx, valid.into_iter().map(|n| (n, corr)).collect()).await?;
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
