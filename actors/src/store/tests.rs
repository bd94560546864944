//! The store actor against a real PostgreSQL database of its own.

use std::time::Duration;

use actix::Arbiter;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use super::*;
use crate::cache::UserCache;
use crate::core::{Caller, ReplyStatus};
use crate::domain::UserId;
use crate::fault::Crash;
use crate::supervisor::{ActorStatus, Supervision};

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

fn exists(id: UserId) -> Execute {
    Execute {
        ctx: CallContext::new(
            Caller {
                name: "test".into(),
                can_read_credentials: false,
            },
            crate::domain::CorrelationId::generate(),
        ),
        request: Request::Exists { id },
    }
}

#[actix::test]
async fn a_panicked_store_is_restarted_and_the_next_request_succeeds() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let (_stop, stopped) = watch::channel(false);
    let actors = Supervision::new(Arbiter::current(), stopped);
    let store = actors.start("userStore", move || {
        UserStore::new(pool.clone(), UserCache::disabled())
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
        .send(exists(UserId::generate()))
        .await
        .expect("a new actor answers")
        .unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(reply.data, serde_json::json!({"exists": false}));
    let state = &actors.states()["userStore"];
    assert_eq!((state.status, state.restarts), (ActorStatus::Up, 1));
    db.drop_now().await;
}
