//! Test databases: each a copy of one migrated template. `CREATE DATABASE … TEMPLATE` takes
//! a fraction of what migrating a new database does, and every test starts a service on one.
//! The template is named by a hash of the migrations, so a changed or added migration gets a
//! template of its own (another branch's stays usable); test processes that start at once
//! (nextest runs one per test) agree on who builds it through an advisory lock.

use std::hash::{Hash, Hasher};

use sqlx::{Connection, PgConnection};

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Held while the template is looked for and, if missing, built ("us.tmpl").
const TEMPLATE_LOCK: i64 = 0x7573_2e74_6d70_6c00;

/// Creates the database `name`, with every migration applied.
pub async fn create(name: &str) {
    let template = template().await;
    let mut admin = admin().await;
    execute(
        &mut admin,
        format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#),
    )
    .await;
    let _ = admin.close().await;
}

/// Drops the database `name`, whoever is still connected to it.
pub async fn remove(name: &str) {
    if let Ok(mut admin) = PgConnection::connect(PG_ADMIN_URL).await {
        let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
    }
}

/// The template's name, built first if this set of migrations has none yet. Once per
/// process; the cell holds only the name, so tests on other runtimes may share it.
async fn template() -> &'static str {
    static NAME: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(find_or_build).await
}

async fn find_or_build() -> String {
    let migrator = sqlx::migrate!("./migrations");
    let mut hasher = std::hash::DefaultHasher::new();
    for m in migrator.iter() {
        m.version.hash(&mut hasher);
        m.checksum.hash(&mut hasher);
    }
    let name = format!("us_template_{:016x}", hasher.finish());
    let mut admin = admin().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .expect("the template's lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("the template looked up");
    if !exists {
        // Built under another name and renamed once complete: a build that died half-way
        // is never taken for a template (its leftover is dropped here).
        let building = format!("{name}_building");
        execute(
            &mut admin,
            format!(r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#),
        )
        .await;
        execute(&mut admin, format!(r#"CREATE DATABASE "{building}""#)).await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{building}");
        let mut db = PgConnection::connect(&url)
            .await
            .expect("the template being built");
        migrator.run(&mut db).await.expect("the migrations apply");
        db.close().await.expect("the template's connection closed");
        execute(
            &mut admin,
            format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#),
        )
        .await;
        // Nobody connects to it (a connection would make every copy fail meanwhile).
        execute(
            &mut admin,
            format!(r#"ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"#),
        )
        .await;
    }
    // Closing the session releases the lock.
    let _ = admin.close().await;
    name
}

async fn admin() -> PgConnection {
    PgConnection::connect(PG_ADMIN_URL)
        .await
        .expect("PostgreSQL answers (scripts/ensure-services.sh starts it)")
}

async fn execute(conn: &mut PgConnection, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
