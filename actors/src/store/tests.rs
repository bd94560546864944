//! The store actor against a real PostgreSQL database of its own.

use std::time::Duration;

use actix::Arbiter;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use super::*;
use crate::cache::UserCache;
use crate::fault::Crash;
use crate::supervisor::{ActorStatus, Supervision};
use user_domain::UserId;
use user_domain::call::{Caller, ReplyStatus};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, migrated database; dropped by [`TestDb::drop_now`].
struct TestDb {
    name: String,
    pool: PgPool,
}

impl TestDb {
    async fn new() -> Self {
        let name = format!("us_core_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(ADMIN_URL).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        sqlx::migrate!("../migrations").run(&pool).await.unwrap();
        Self { name, pool }
    }

    /// A store over this database, without a cache.
    fn store(&self) -> Store {
        Store::new(
            self.pool.clone(),
            UserCache::disabled(),
            Arc::new(BillingKeys::development()),
            guard(),
        )
    }

    async fn drop_now(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(ADMIN_URL).await.unwrap();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// A breaker whose probe always answers, and a patience no test reaches.
fn guard() -> PgGuard {
    let probe: crate::breaker::Probe = Arc::new(|| Box::pin(async { true }));
    let breaker =
        crate::breaker::Breaker::new("database", 3, (Duration::ZERO, Duration::ZERO), probe);
    PgGuard::new(breaker, Duration::from_secs(30))
}

/// Long enough that no test's own ledger entry is pruned.
const RETENTION: Duration = Duration::from_secs(24 * 3600);

fn call() -> CallContext {
    CallContext::new(
        Caller {
            name: "test".into(),
            rights: Default::default(),
        },
        user_domain::CorrelationId::generate(),
        Default::default(),
    )
}

fn new_user(email: &str) -> user_domain::NewUser {
    user_domain::NewUser {
        name: user_domain::UserName::parse("Test").unwrap(),
        email: user_domain::Email::parse(email).unwrap(),
        password: user_domain::PasswordHash::parse(
            "$2b$10$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX",
        )
        .unwrap(),
    }
}

fn create(email: &str) -> Create {
    Create::new(call(), new_user(email))
}

#[actix::test]
async fn a_panicked_store_is_restarted_and_the_next_request_succeeds() {
    let db = TestDb::new().await;
    let shared = db.store();
    let (_stop, stopped) = watch::channel(false);
    let actors = Supervision::new(Arbiter::current(), stopped);
    let store = actors.start("userStore", move || {
        UserStore::new(shared.clone(), RETENTION)
    });

    let first = store.addr();
    assert!(
        first.send(Crash::InHandler).await.is_err(),
        "the crash kills the actor"
    );
    assert!(!first.connected());

    let reply = store
        .ready(Duration::from_secs(2))
        .await
        .expect("restarted within 2 s")
        .send(create("after@example.com"))
        .await
        .expect("a new actor answers")
        .unwrap();
    assert_eq!(reply.status, ReplyStatus::Created);
    let state = &actors.states()["userStore"];
    assert_eq!((state.status, state.restarts), (ActorStatus::Up, 1));
    db.drop_now().await;
}

/// A write whose deadline passed before it could commit is rolled back, and says so truly.
#[actix::test]
async fn a_write_past_its_deadline_commits_nothing() {
    let db = TestDb::new().await;
    let store = UserStore::new(db.store(), RETENTION).start();
    let Create { mut ctx, new, .. } = create("late@example.com");
    ctx.deadline = Some(tokio::time::Instant::now());
    let late = store
        .send(Create::new(ctx.clone(), new.clone()))
        .await
        .unwrap();
    assert!(matches!(late, Err(CoreError::Unavailable(_))), "{late:?}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((users, events), (0, 0), "nothing was written");

    ctx.deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(30));
    let in_time = store.send(Create::new(ctx, new)).await.unwrap();
    assert!(in_time.is_ok(), "{in_time:?}");
    db.drop_now().await;
}

/// An event over the publisher's bounds fails the write that makes it, before anything is
/// written; events within them go in.
#[tokio::test]
async fn events_over_the_bounds_are_refused_on_write() {
    use crate::publisher::encode::MAX_DEPTH;
    use serde_json::json;
    use user_domain::CorrelationId;
    use user_domain::events::{Event, EventType};

    let db = TestDb::new().await;
    let corr = CorrelationId::generate();
    let corr = user_domain::events::Origin {
        correlation_id: corr,
        actor: "t".to_owned(),
        trace: Default::default(),
    };
    let event = |data| Event::new(EventType::UserUpdated, UserId::generate(), &corr, data);
    let deep = (0..MAX_DEPTH).fold(json!(1), |inner, _| json!([inner]));
    let big = json!("x".repeat(crate::publisher::encode::MAX_EVENT_BYTES));
    let count = "SELECT count(*) FROM outbox";

    for bad in [deep, big] {
        let mut tx = db.pool.begin().await.unwrap();
        let err = outbox::append(&mut tx, &[event(json!({})), event(bad)])
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            user_domain::ErrorCode::ValidationFailed,
            "{err:?}"
        );
        let n: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(n, 0, "nothing of the write is in the outbox");
    }
    let mut tx = db.pool.begin().await.unwrap();
    let fine = json!({"nested": (2..MAX_DEPTH).fold(json!(1), |inner, _| json!([inner]))});
    outbox::append(&mut tx, &[event(fine)]).await.unwrap();
    tx.commit().await.unwrap();
    let n: i64 = sqlx::query_scalar(count).fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 1);
    db.drop_now().await;
}

/// Creates sent together are committed in groups, and each keeps its own answer: a taken
/// address fails that create only, a key sent twice is written once, every created user has
/// its one event.
#[actix::test]
async fn creates_sent_together_each_get_their_own_answer() {
    use user_domain::{CorrelationId, Email, NewUser, PasswordHash, UserName};

    let db = TestDb::new().await;
    let store = UserStore::new(db.store(), RETENTION).start();
    let create = |email: &str, key: Option<&str>| {
        let caller = Caller {
            name: "test".into(),
            rights: Default::default(),
        };
        let ctx =
            CallContext::new(caller, CorrelationId::generate(), Default::default()).keyed(key);
        let new = NewUser {
            name: UserName::parse("Grouped").unwrap(),
            email: Email::parse(email).unwrap(),
            password: PasswordHash::parse("$2b$10$abcdefghijklmnopqrstuv").unwrap(),
        };
        store.send(Create::new(ctx, new))
    };
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(create(&format!("u{i}@example.com"), None));
    }
    sent.push(create("twice@example.com", None));
    sent.push(create("twice@example.com", None));
    sent.push(create("keyed@example.com", Some("k1")));
    sent.push(create("keyed@example.com", Some("k1")));
    let answers: Vec<_> = futures::future::join_all(sent)
        .await
        .into_iter()
        .map(|a| a.expect("the store answers"))
        .collect();

    let created: Vec<&Reply> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert!(created.iter().all(|r| r.status == ReplyStatus::Created));
    let codes = |code| {
        answers
            .iter()
            .filter(|a| matches!(a, Err(e) if e.code() == code))
            .count()
    };
    let (taken, running) = (
        codes(user_domain::ErrorCode::EmailTaken),
        codes(user_domain::ErrorCode::Conflict),
    );
    // 40 distinct, one of the two "twice", and the keyed one: answered once as created and
    // once as a replay of that same reply, or as still running.
    assert_eq!(taken, 1, "{answers:?}");
    assert_eq!(created.len() + running, 43, "{answers:?}");
    let keyed: Vec<_> = answers[42..]
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .collect();
    if let [first, second] = keyed.as_slice() {
        assert_eq!(first.data, second.data, "a replay answers as the first did");
    }
    let count = |sql| sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool);
    assert_eq!(count("SELECT count(*) FROM users").await.unwrap(), 42);
    assert_eq!(count("SELECT count(*) FROM outbox").await.unwrap(), 42);
    assert_eq!(
        count("SELECT count(*) FROM applied_requests")
            .await
            .unwrap(),
        1
    );
    db.drop_now().await;
}

/// A write that panics on its task fails that one request with INTERNAL; the worker pool and
/// the store go on (more such writes than workers, then a write of the same user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_panics_fails_only_itself() {
    use crate::fault::PANIC_IN_WRITE_CORRELATION_ID;
    use user_domain::CorrelationId;
    use user_domain::request::{Method, ParamForm};

    let db = TestDb::new().await;
    let store = db.store();
    let created = store
        .write(call(), Request::Create(new_user("panic@example.com")))
        .await
        .unwrap();
    let id = created.data.to_value()["id"].clone();
    let login = || {
        Request::parse(
            Method::RecordLogin,
            serde_json::json!({"id": id}),
            ParamForm::Json,
        )
        .unwrap()
    };
    let doomed = || {
        let mut ctx = call();
        ctx.correlation_id = CorrelationId::parse(PANIC_IN_WRITE_CORRELATION_ID).unwrap();
        store.write(ctx, login())
    };
    let answers = futures::future::join_all((0..8).map(|_| doomed())).await;
    for a in &answers {
        assert!(matches!(a, Err(CoreError::Internal(_))), "{a:?}");
    }
    let fine = store.write(call(), login()).await.unwrap();
    assert_eq!(fine.status, ReplyStatus::Ok);
    assert!(
        fine.data.to_value()["lastLoginAt"].is_string(),
        "{:?}",
        fine.data.to_value()
    );
    db.drop_now().await;
}

/// The UserStore prunes the ledger as it starts (and every minute after): entries past the
/// retention go, the others stay.
#[actix::test]
async fn the_user_store_prunes_the_ledger() {
    let db = TestDb::new().await;
    for (key, age) in [("old", "2 days"), ("new", "1 hour")] {
        sqlx::query(
            "INSERT INTO applied_requests (request_key, method, fingerprint, status, body, created_at)
             VALUES ($1, 'users.update', 'f', 200, '{}', now() - $2::interval)",
        )
        .bind(key)
        .bind(age)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let _store = UserStore::new(db.store(), RETENTION).start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let keys: Vec<String> = sqlx::query_scalar("SELECT request_key FROM applied_requests")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        if keys.len() < 2 || tokio::time::Instant::now() >= deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(keys, ["new"]);
    db.drop_now().await;
}

/// Reads the cache could not answer go to the readers' pool, writes to the main one: with
/// the readers' pool closed, a read is refused (503, never a wait) and a write still goes in.
#[actix::test]
async fn reads_ask_the_readers_pool_and_writes_the_main_one() {
    use user_domain::request::{GetUser, Request};

    let db = TestDb::new().await;
    let readers = PgPool::connect(&format!("postgres://postgres@127.0.0.1:5432/{}", db.name))
        .await
        .unwrap();
    let store = db.store().reading_from(Readers::sharing(readers.clone()));
    let users = UserStore::new(store.clone(), RETENTION).start();
    let first = users.send(create("first@example.com")).await.unwrap();
    assert!(first.is_ok(), "{first:?}");
    let id: sqlx::types::Uuid = sqlx::query_scalar("SELECT id FROM users")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let get = || {
        let id = UserId::from(id);
        store.read(call(), Request::Get(GetUser { id, fields: None }))
    };
    let read = get().await;
    assert!(read.is_ok(), "{read:?}");

    readers.close().await;
    let refused = get().await;
    assert!(
        matches!(&refused, Err(CoreError::Unavailable(m)) if m == guard::UNREACHABLE),
        "{refused:?}"
    );
    let second = users.send(create("second@example.com")).await.unwrap();
    assert!(second.is_ok(), "writes keep their own pool: {second:?}");
    db.drop_now().await;
}
