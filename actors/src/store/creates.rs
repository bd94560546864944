//! Creates: one user, or a batch in one insert, with their USER_CREATED events.

use super::db_error;
use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::types::Uuid;

use tokio::sync::oneshot;

use super::db::{Db, Written};
use super::group_commit::{self, Pending};
use super::ledger::{self, Keyed};
use super::outbox;
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::events::{Event, EventType, Origin};
use user_domain::views;
use user_domain::{NewUser, Timestamp, User, UserId};

/// One create: a group of one (see [`super::group`]).
pub(super) async fn create(
    db: &Db,
    new: NewUser,
    keyed: Option<Keyed>,
    corr: Origin,
) -> Result<Reply, CoreError> {
    let (answer, answered) = oneshot::channel();
    let pending = Pending {
        new,
        keyed,
        corr,
        deadline: db.deadline,
        answer,
        span: crate::telemetry::request_span(),
    };
    group_commit::create_all(db.clone(), vec![pending]).await;
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

/// One user to insert: what was asked, the request's correlation id (for its event), and its
/// request key when its reply goes into the ledger with it.
pub(super) struct Insert<'a> {
    pub(super) new: NewUser,
    pub(super) corr: &'a Origin,
    pub(super) keyed: Option<&'a Keyed>,
}

/// Inserts users, their USER_CREATED events and the ledger entries of the keyed ones in one
/// statement (in the caller's transaction, or committing by itself). Each input gets its
/// user and `201` reply, or `Err(email)` when its address is already taken (by a live user
/// or by an earlier entry); a taken address writes nothing of that user.
pub(super) async fn insert_users(
    conn: &mut sqlx::PgConnection,
    keys: &BillingKeys,
    inserts: Vec<Insert<'_>>,
) -> Result<Vec<Result<(User, Reply), String>>, CoreError> {
    let now = Timestamp::now();
    let n = inserts.len();
    let (mut uuids, mut emails, mut names, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut event_ids, mut payloads) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut parents, mut states) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut ledger_users, mut ledger_keys, mut methods, mut fingerprints, mut bodies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut candidates = Vec::with_capacity(n);
    for Insert { new, corr, keyed } in inserts {
        let user = User {
            id: UserId::generate(),
            email: new.email,
            name: new.name,
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
        };
        let id = user.id.as_uuid();
        let data = json!({"name": user.name, "email": user.email});
        let event = Event::new(EventType::UserCreated, user.id, corr, data);
        event_ids.push(event.event_id);
        payloads.push(outbox::stored(&event)?);
        parents.push(event.trace.traceparent());
        states.push(event.trace.tracestate().map(str::to_owned));
        let reply = Reply::created(views::user(&user));
        if let Some(k) = keyed {
            ledger_users.push(id);
            ledger_keys.push(k.key());
            methods.push(k.method());
            fingerprints.push(k.fingerprint());
            bodies.push(ledger::stored_body(keys, k.key(), &reply)?);
        }
        uuids.push(id);
        emails.push(user.email.to_string());
        names.push(user.name.to_string());
        hashes.push(new.password.to_string());
        candidates.push((user, reply));
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(concat!(
        "WITH u AS (
            INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
            SELECT id, email, name, hash, $5, $5
              FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS t(id, email, name, hash)
            ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING
            RETURNING id
         ), events AS (
            INSERT INTO outbox
                   (event_id, user_id, event_type, routing_key, payload, traceparent, tracestate)
            SELECT e.event_id, e.user_id, $8, $9, e.payload::json, e.traceparent, e.tracestate
              FROM UNNEST($6::uuid[], $1::uuid[], $7::text[], $15::text[], $16::text[])
                   WITH ORDINALITY AS e(event_id, user_id, payload, traceparent, tracestate, n)
             WHERE e.user_id IN (SELECT id FROM u)
             ORDER BY e.n
             RETURNING user_id, event_type, payload, traceparent
         ), history AS (",
        outbox::history_of_events!(),
        "), ledger AS (
            INSERT INTO applied_requests (request_key, method, fingerprint, status, body, user_id)
            SELECT r.request_key, r.method, r.fingerprint, 201, r.body::json, r.user_id
              FROM UNNEST($10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[])
                   AS r(user_id, request_key, method, fingerprint, body)
             WHERE r.user_id IN (SELECT id FROM u)
         )
         SELECT id FROM u"
    ))
    .bind(&uuids)
    .bind(&emails)
    .bind(&names)
    .bind(&hashes)
    .bind(now.as_datetime())
    .bind(&event_ids)
    .bind(&payloads)
    .bind(EventType::UserCreated.as_str())
    .bind(EventType::UserCreated.routing_key())
    .bind(&ledger_users)
    .bind(&ledger_keys)
    .bind(&methods)
    .bind(&fingerprints)
    .bind(&bodies)
    .bind(&parents)
    .bind(&states)
    .fetch_all(&mut *conn)
    .await.map_err(db_error)?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    Ok(candidates
        .into_iter()
        .map(
            |(user, reply)| match inserted.contains(&user.id.as_uuid()) {
                true => Ok((user, reply)),
                false => Err(user.email.to_string()),
            },
        )
        .collect())
}

/// Validates each item on its own; the valid ones go to the database in one insert. A
/// request key covers the whole batch: its reply is recorded as one.
pub(super) async fn batch_create(
    db: &Db,
    items: Vec<Result<NewUser, CoreError>>,
    keyed: Option<&Keyed>,
    corr: &Origin,
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
    db.write(keyed, async |tx| {
        let inserts = valid
            .into_iter()
            .map(|new| Insert {
                new,
                corr,
                keyed: None,
            })
            .collect();
        let inserted = insert_users(tx, &db.keys, inserts).await?;
        let (mut stale, mut conflicts) = (Vec::new(), 0);
        for (index, outcome) in valid_at.into_iter().zip(inserted) {
            results[index] = match outcome {
                Ok((user, _)) => {
                    let item = json!({"index": index, "status": "created", "id": user.id});
                    stale.push((user.id, vec![user.email]));
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
            "stats": {"requested": requested, "created": stale.len(), "conflict": conflicts,
                      "invalid": requested - stale.len() - conflicts},
        }));
        Ok(Written { reply, stale })
    })
    .await
}
