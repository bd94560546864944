//! The ceilings: what the service's own path would reach if its logic cost nothing.
//!
//! * `rpc-noop` (a child process): consumes its own queue on the same broker with the
//!   service's prefetch and answers every request with a fixed `{"status":200,"data":user}`,
//!   publishing the reply without waiting for a confirm and then acking.
//! * `warp-fixed` (a child process): a bare warp server answering every GET with a fixed
//!   JSON body, `/one/…` one user, `/batch/…` a 100-id batch lookup.
//! * `sql_create` (in this process): the SQL transaction of a keyed create, as the store runs it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::{Json, Uuid};

use crate::workloads::PASSWORD_HASH;

/// A pool as the service's: `size` connections, opened before the load starts, handed out
/// without a ping, as the service's readers' pool (`actors/src/store/readers.rs`).
pub async fn sql_pool(url: &str, size: u32) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| format!("SQL ceiling pool: {e}"))
}

/// The transaction of a keyed `users.create` (store/ledger.rs, creates.rs, outbox.rs): the
/// key's advisory lock and lookup, the users insert, the outbox insert, the ledger insert,
/// commit. Normal durability.
pub async fn sql_create(pool: &PgPool, tag: &str, uniq: &str) -> Result<(), String> {
    sql_create_tx(pool, tag, uniq)
        .await
        .map_err(|e| format!("sql: {e}"))
}

async fn sql_create_tx(pool: &PgPool, tag: &str, uniq: &str) -> Result<(), sqlx::Error> {
    let key = format!("local:sql-{tag}-{uniq}");
    let email = format!("sql-{uniq}.{tag}@bench.example.com");
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock_id(&key))
        .fetch_one(&mut *tx)
        .await?;
    let found: Option<(String, i16, Json<Value>)> = sqlx::query_as(
        "SELECT fingerprint, status, body FROM applied_requests WHERE request_key = $1",
    )
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?;
    if !locked || found.is_some() {
        return Err(sqlx::Error::Protocol("request key already used".into()));
    }
    let now = chrono::Utc::now();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
         SELECT id, email, name, hash, $5, $5
           FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
                AS t(id, email, name, hash)
         ON CONFLICT (lower(email)) WHERE deleted_at IS NULL DO NOTHING
         RETURNING id",
    )
    .bind(vec![id])
    .bind(vec![email.as_str()])
    .bind(vec!["Bench User"])
    .bind(vec![PASSWORD_HASH])
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if inserted.is_empty() {
        return Err(sqlx::Error::Protocol("email taken".into()));
    }
    let event_id = Uuid::now_v7();
    let event = json!({
        "eventId": event_id, "type": "USER_CREATED", "userId": id, "timestamp": now,
        "correlationId": uniq, "source": "user-service",
        "data": {"name": "Bench User", "email": email},
    });
    sqlx::query(
        "INSERT INTO outbox (event_id, user_id, event_type, routing_key, payload)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[]::json[])",
    )
    .bind(vec![event_id])
    .bind(vec![id])
    .bind(vec!["USER_CREATED"])
    .bind(vec!["user.created"])
    .bind(vec![event.to_string()])
    .execute(&mut *tx)
    .await?;
    let reply = created_view(id, &email, now);
    sqlx::query(
        "INSERT INTO applied_requests (request_key, method, fingerprint, status, body)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key)
    .bind("users.create")
    .bind(format!("{:032x}{:032x}", id.as_u128(), event_id.as_u128()))
    .bind(201i16)
    .bind(Json(&reply))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The key's advisory lock id. The store hashes with SHA-256; any 64-bit hash takes the
/// same lock path in PostgreSQL.
fn lock_id(key: &str) -> i64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish() as i64
}

/// The reply a create records: the new user as `users.get` shows it.
fn created_view(id: Uuid, email: &str, now: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "id": id, "email": email, "name": "Bench User", "avatarUrl": null, "isActive": true,
        "lastLoginAt": null, "createdAt": now, "updatedAt": now,
        "preferences": {"language": "en", "timezone": "UTC",
            "notifications": {"email": true, "push": true, "sms": false},
            "gameSettings": {"autoDownload": false, "cloudSave": true,
                "achievementNotifications": true, "preferredGenres": []},
            "downloadSettings": {"maxConcurrentDownloads": 3, "downloadPath": null,
                "autoUpdate": true}},
        "privacySettings": {"profileVisibility": "public", "showOnlineStatus": true,
            "showGameActivity": true, "allowFriendRequests": true},
        "billingInfo": null,
        "billingStats": {"totalSpent": "0.00", "paymentsCount": 0, "currency": null},
        "metadata": {},
    })
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The `otlp-sink` role: an OTLP/HTTP receiver that takes every export (`POST`, any path)
/// and answers 200, printing what it took on stderr every 10 s.
pub async fn otlp_sink() -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use warp::Filter;
    let (exports, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let counted = (exports.clone(), bytes.clone());
    let routes = warp::post()
        .and(warp::body::bytes())
        .map(move |body: bytes::Bytes| {
            counted.0.fetch_add(1, Ordering::Relaxed);
            counted.1.fetch_add(body.len() as u64, Ordering::Relaxed);
            warp::reply()
        });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (n, b) = (
                exports.load(Ordering::Relaxed),
                bytes.load(Ordering::Relaxed),
            );
            eprintln!("otlp-sink: {n} exports, {:.1} MiB", b as f64 / 1048576.0);
        }
    });
    announce(&format!("READY {port}"));
    warp::serve(routes).incoming(listener).run().await;
    Ok(())
}

/// The `rpc-noop` role: `BENCH_AMQP_URL`, `BENCH_QUEUE`, `BENCH_PREFETCH`, `BENCH_BODY_FILE`.
pub async fn rpc_noop() -> Result<(), String> {
    let body = std::fs::read(env("BENCH_BODY_FILE")?).map_err(|e| e.to_string())?;
    let queue = env("BENCH_QUEUE")?;
    let prefetch: u16 = env("BENCH_PREFETCH")?
        .parse()
        .map_err(|_| "BENCH_PREFETCH")?;
    let props = ConnectionProperties::default().with_connection_name("bench rpc-noop".into());
    let conn = Connection::connect(&env("BENCH_AMQP_URL")?, props)
        .await
        .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let consume = async {
        ch.queue_declare(queue.clone().into(), durable, FieldTable::default())
            .await?;
        ch.queue_purge(queue.clone().into(), Default::default())
            .await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        ch.basic_consume(
            queue.into(),
            "rpc-noop".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    };
    let mut deliveries = consume.await.map_err(|e| e.to_string())?;
    announce("READY");
    let body: &'static [u8] = body.leak();
    while let Some(Ok(delivery)) = deliveries.next().await {
        let ch = ch.clone();
        tokio::spawn(async move {
            let p = &delivery.properties;
            if let Some(reply_to) = p.reply_to().clone() {
                let mut props =
                    BasicProperties::default().with_content_type("application/json".into());
                if let Some(c) = p.correlation_id().clone() {
                    props = props.with_correlation_id(c);
                }
                // Published without waiting for a confirm (the channel asks for none).
                let _ = ch
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        body,
                        props,
                    )
                    .await;
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        });
    }
    Ok(())
}

/// The `warp-fixed` role: `BENCH_ONE_FILE`, `BENCH_BATCH_FILE`; announces `READY <port>`.
pub async fn warp_fixed() -> Result<(), String> {
    use warp::Filter;
    let one = bytes::Bytes::from(std::fs::read(env("BENCH_ONE_FILE")?).map_err(|e| e.to_string())?);
    let batch =
        bytes::Bytes::from(std::fs::read(env("BENCH_BATCH_FILE")?).map_err(|e| e.to_string())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let routes = warp::get()
        .and(warp::path::tail())
        .map(move |tail: warp::path::Tail| {
            let body = if tail.as_str().starts_with("batch") {
                batch.clone()
            } else {
                one.clone()
            };
            warp::http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap_or_default()
        });
    announce(&format!("READY {port}"));
    // Served by the service's own server code, so that this is the ceiling of the same code.
    let (_serving, stop) = tokio::sync::watch::channel(false);
    let limits = user_service::config::HttpLimits::default();
    user_service::http::server::serve(listener, warp::service(routes), limits, stop).await;
    Ok(())
}
