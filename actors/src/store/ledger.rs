//! The ledger of applied requests: one table, `applied_requests`, makes every keyed write
//! happen once. A write that carries a request key (an RPC `message_id`, an
//! `Idempotency-Key`, scoped to the caller) takes the key's advisory lock in its own
//! transaction and looks the key up:
//!
//! * lock held by another transaction → 409 `CONFLICT` (that request is still being processed),
//!   except for a broker redelivery, which waits a moment for it (see [`lock`]);
//! * found with the same fingerprint → the stored reply, and nothing new is written;
//! * found with another fingerprint → 422 `IDEMPOTENCY_KEY_REUSED`;
//! * not found → the write is done and its reply recorded in the same transaction.
//!
//! A failed write records nothing. A crash releases the lock with the connection.

use super::db_error;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::time::Instant;

use crate::crypto::{BillingKeys, Place};
use crate::retry::Backoff;
use user_domain::NewUser;
use user_domain::UserId;
use user_domain::call::{CallContext, Reply, ReplyStatus};
use user_domain::error::CoreError;
use user_domain::request::{Method, Request};

/// A write's request key with what identifies the request it first came with.
#[derive(Debug, Clone)]
pub(super) struct Keyed {
    key: String,
    method: &'static str,
    fingerprint: String,
    /// A broker redelivery: waits for the key's lock (see [`lock`]).
    redelivered: bool,
    /// The user the write is about, whose erasure destroys its stored reply (see `super::erasure`).
    subject: Option<UserId>,
}

impl Keyed {
    /// The caller-scoped key.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn method(&self) -> &'static str {
        self.method
    }

    pub(super) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(super) fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// `None` without a key, or for a read (reads change nothing and need no ledger).
    pub(super) fn new(ctx: &CallContext, req: &Request) -> Option<Self> {
        if req.method().is_read() {
            return None;
        }
        Self::with(ctx, req.method(), req.content())
    }

    /// [`Self::new`] of a `users.create` of `new`, without building the request.
    pub(super) fn of_create(ctx: &CallContext, new: &NewUser) -> Option<Self> {
        let content = serde_json::to_value(new).unwrap_or(Value::Null);
        Self::with(ctx, Method::Create, content)
    }

    fn with(ctx: &CallContext, method: Method, content: Value) -> Option<Self> {
        // Every write about one existing user names it `id`.
        let subject = content.get("id").and_then(Value::as_str);
        let subject = subject.and_then(|s| UserId::parse(s).ok());
        Some(Self {
            key: ctx.request_key.clone()?,
            method: method.as_str(),
            fingerprint: digest(method, content),
            redelivered: ctx.redelivered,
            subject,
        })
    }
}

/// The advisory lock that a request key takes while its write runs: the first 8 bytes of
/// SHA-256 of the (caller-scoped) key.
pub fn lock_id(key: &str) -> i64 {
    let digest = Sha256::digest(format!("user-service:applied_requests\n{key}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// SHA-256 (hex) of the method name and the canonical form of what the request asks
/// ([`Request::content`]): keys sorted at every level, so the order the caller wrote them in
/// does not matter.
pub fn fingerprint(req: &Request) -> String {
    digest(req.method(), req.content())
}

fn digest(method: Method, content: Value) -> String {
    let text = format!("{method}\n{}", canonical(content));
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `v` with every object's keys in sorted order (serde_json keeps insertion order here).
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// How a keyed write starts.
pub(super) enum Begun {
    /// Do the write in this transaction, then [`record`] its reply.
    Fresh(Transaction<'static, Postgres>),
    /// The request was answered before: answer the same, do nothing.
    Replay(Reply),
}

/// Opens the write's transaction; with a key, takes its lock and looks it up. A stored
/// reply's billing fields are sealed (as in the users table) and opened with `keys`.
pub(super) async fn begin(
    pool: &PgPool,
    keys: &BillingKeys,
    keyed: Option<&Keyed>,
) -> Result<Begun, CoreError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let Some(k) = keyed else {
        return Ok(Begun::Fresh(tx));
    };
    if !lock(&mut tx, k).await? {
        return Err(still_running());
    }
    let row: Option<(String, i16, Json<Value>)> = sqlx::query_as(
        "SELECT fingerprint, status, body FROM applied_requests WHERE request_key = $1",
    )
    .bind(&k.key)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let Some((fingerprint, status, Json(data))) = row else {
        return Ok(Begun::Fresh(tx));
    };
    tx.rollback().await.map_err(db_error)?;
    replay(keys, k, &fingerprint, status, data).map(Begun::Replay)
}

/// How long a redelivered request waits for its key's lock. The delivery before it is gone:
/// its work either committed already or is rolled back as soon as PostgreSQL sees its
/// connection close, which takes milliseconds after a crash.
const REDELIVERY_WAIT: Duration = Duration::from_secs(5);

/// Takes the key's lock for this transaction; false when another transaction holds it.
/// A broker redelivery tries again for up to [`REDELIVERY_WAIT`]: the work of the delivery
/// before it is ending, and a 409 would answer a request that nobody processes any more.
pub(super) async fn lock(conn: &mut PgConnection, k: &Keyed) -> Result<bool, CoreError> {
    // Set up on the first refusal only: most writes take their key at once.
    let mut waiting: Option<(Instant, Backoff)> = None;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(lock_id(&k.key))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?;
        if locked || !k.redelivered {
            return Ok(locked);
        }
        let (until, backoff) = waiting.get_or_insert_with(|| {
            let backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
            (Instant::now() + REDELIVERY_WAIT, backoff)
        });
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        tokio::time::sleep(backoff.next_delay().min(left)).await;
    }
}

/// The answer to a key whose request is being processed right now.
pub(super) fn still_running() -> CoreError {
    CoreError::Conflict("a request with this key is still being processed; retry later".to_owned())
}

/// The answer to a key found in the ledger: its stored reply for the same request, a refusal
/// for another.
pub(super) fn replay(
    keys: &BillingKeys,
    k: &Keyed,
    fingerprint: &str,
    status: i16,
    mut data: Value,
) -> Result<Reply, CoreError> {
    if fingerprint == ERASED {
        let id = data.as_str().unwrap_or("this request was about");
        return Err(CoreError::UserErased(id.to_owned()));
    }
    if fingerprint != k.fingerprint {
        return Err(CoreError::IdempotencyKeyReused(
            "this request key was already used for a different request".to_owned(),
        ));
    }
    let status = u16::try_from(status)
        .ok()
        .and_then(ReplyStatus::from_code)
        .ok_or_else(|| CoreError::Internal(format!("ledger holds status {status}")))?;
    if let Some(info) = data.get_mut("billingInfo") {
        keys.open_billing(info, Place::Request(&k.key))?;
    }
    Ok(Reply {
        status,
        data: data.into(),
    })
}

/// Records the reply of a keyed write, in the write's transaction; its billing fields sealed.
pub(super) async fn record(
    conn: &mut PgConnection,
    keys: &BillingKeys,
    keyed: Option<&Keyed>,
    reply: &Reply,
) -> Result<(), CoreError> {
    let Some(k) = keyed else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO applied_requests (request_key, method, fingerprint, status, body, user_id)
         VALUES ($1, $2, $3, $4, $5::json, $6)",
    )
    .bind(&k.key)
    .bind(k.method)
    .bind(&k.fingerprint)
    .bind(i16::try_from(reply.status.code()).unwrap_or(i16::MAX))
    .bind(stored_body(keys, &k.key, reply)?)
    .bind(k.subject.map(|id| id.as_uuid()))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// A reply as the ledger keeps it under `key`: JSON text, its billing fields sealed.
pub(super) fn stored_body(
    keys: &BillingKeys,
    key: &str,
    reply: &Reply,
) -> Result<String, CoreError> {
    let mut body = reply.data.to_value();
    if let Some(info) = body.get_mut("billingInfo") {
        keys.seal_billing(info, Place::Request(key))?;
    }
    Ok(body.to_string())
}

/// The fingerprint of a stored reply whose user was erased: whatever comes with its key is
/// answered that the user is gone, and nothing of what was asked is kept.
pub(super) const ERASED: &str = "erased";

/// Deletes ledger rows older than `retention`: a request redelivered after that is new again.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    super::expire(pool, super::Expiring::Ledger, retention).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use user_domain::request::{Method, ParamForm};

    fn parse(method: Method, params: Value) -> Request {
        Request::parse(method, params, ParamForm::Json).unwrap()
    }

    /// A call of caller `a` with request key `k` (`a:k` in the ledger), or none.
    fn ctx(key: Option<&str>) -> CallContext {
        let caller = user_domain::call::Caller {
            name: "a".to_owned(),
            rights: Default::default(),
        };
        CallContext::new(
            caller,
            user_domain::CorrelationId::generate(),
            Default::default(),
        )
        .keyed(key)
    }

    #[test]
    fn fingerprints_ignore_key_order_and_see_content() {
        let id = "6f1c1c3e-8a55-4c2e-9d7a-0a3c1f2b4d5e";
        let a = parse(
            Method::UpdatePreferences,
            json!({"id": id, "language": "en", "gameSettings": {"autoDownload": true, "cloudSave": false}}),
        );
        let b = parse(
            Method::UpdatePreferences,
            json!({"gameSettings": {"cloudSave": false, "autoDownload": true}, "language": "en", "id": id}),
        );
        let c = parse(
            Method::UpdatePreferences,
            json!({"id": id, "language": "de", "gameSettings": {"autoDownload": true, "cloudSave": false}}),
        );
        let other_method = parse(
            Method::UpdatePrivacySettings,
            json!({"id": id, "language": "en", "gameSettings": {"autoDownload": true, "cloudSave": false}}),
        );
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_ne!(fingerprint(&a), fingerprint(&other_method));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn reads_and_unkeyed_writes_need_no_ledger() {
        let id = "6f1c1c3e-8a55-4c2e-9d7a-0a3c1f2b4d5e";
        let get = parse(Method::Get, json!({"id": id}));
        let delete = parse(Method::Delete, json!({"id": id}));
        assert!(Keyed::new(&ctx(Some("k")), &get).is_none());
        assert!(Keyed::new(&ctx(None), &delete).is_none());
        let keyed = Keyed::new(&ctx(Some("k")), &delete).unwrap();
        assert_eq!((keyed.key(), keyed.redelivered()), ("a:k", false));
    }

    /// The UserStore keys a create without building its request: the same key either way,
    /// or a replay would be refused as a different request.
    #[test]
    fn a_create_is_keyed_alike_with_or_without_its_request() {
        let params = json!({"name": "Ann", "email": "ann@example.com", "password": "$2b$10$abcdefghijklmnopqrstuv"});
        let req = parse(Method::Create, params);
        let Request::Create(new) = &req else {
            panic!("a create")
        };
        let (a, b) = (
            Keyed::new(&ctx(Some("k")), &req).unwrap(),
            Keyed::of_create(&ctx(Some("k")), new).unwrap(),
        );
        assert_eq!(
            (a.key(), a.method(), a.fingerprint()),
            (b.key(), b.method(), b.fingerprint())
        );
        assert!(Keyed::of_create(&ctx(None), new).is_none());
    }

    #[test]
    fn lock_ids_are_stable_and_per_key() {
        assert_eq!(lock_id("a:k"), lock_id("a:k"));
        assert_ne!(lock_id("a:k"), lock_id("b:k"));
    }
}
