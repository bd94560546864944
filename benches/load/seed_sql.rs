//! Seeding users straight into PostgreSQL (`--seed sql`): a million in seconds, where the
//! service's batch create would take minutes.
//!
//! Each row is what a create through the service writes (`actors/src/store/creates.rs`):
//! `id`, `email`, `name`, `password_hash`, `created_at` = `updated_at`, every other column
//! its default (preferences, privacy settings and metadata `{}`, which the service fills
//! with their defaults on read; no billing info; no payments; not deleted). The id is a
//! UUIDv7 whose timestamp is the user's `created_at`, to the millisecond, as
//! `UserId::generate` makes them: user *i* of *n* was created *n − i* ms before the seeding,
//! so ids grow with *i* and new rows land at the right edge of the primary key, as the
//! service's do. The e-mail is `user<i>.<tag>@bench.example.com`, as `seed.rs` makes them;
//! the name one of 1 152 first-and-last names (`scripts/seed-users.sql`, which this runs, as
//! `scripts/seed-users.sh` does).
//! No outbox events and no ledger entries are written: nothing consumes them in the bench,
//! and the service's reads never look at them.
//!
//! The rows come from `generate_series` in [`PARTS`] `INSERT … SELECT … RETURNING id, email`
//! statements run side by side (one per core), then `VACUUM (ANALYZE) users`, as
//! autovacuum would after a bulk load (the development machine runs PostgreSQL with it off):
//! the planner gets the table's real size, and the rows' hint bits are set before the
//! measurements rather than by their first reads.

use std::time::Instant;

use futures::TryStreamExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Uuid;

use crate::workloads::{PASSWORD_HASH, Seeded};

/// Statements run side by side, each on its own connection.
const PARTS: usize = 2;

/// Users `$1..=$2` (`$3`: the run's tag; `$4`: the creation time of user 0, in Unix ms;
/// `$5`: the password hash), as `scripts/seed-users.sh` seeds them.
const INSERT: &str = include_str!("../../scripts/seed-users.sql");

/// Inserts `n` users for the run `tag` into the database `url`; their ids and emails.
pub async fn seed(url: &str, n: usize, tag: &str) -> Result<Seeded, String> {
    let started = Instant::now();
    let pool = PgPoolOptions::new()
        .max_connections(PARTS as u32)
        .connect(url)
        .await
        .map_err(|e| format!("seeding by SQL: {e}"))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let first_ms = now_ms - i64::try_from(n).map_err(|_| "--users: too many")?;
    let per_part = n.div_ceil(PARTS);
    let parts = (0..PARTS).filter_map(|p| {
        let from = p * per_part;
        let to = ((p + 1) * per_part).min(n);
        (from < to).then(|| insert_part(&pool, from, to - 1, tag, first_ms))
    });
    let inserted = futures::future::try_join_all(parts).await?;
    let insert_secs = started.elapsed().as_secs_f64();
    let mut users = Seeded {
        ids: Vec::with_capacity(n),
        emails: Vec::with_capacity(n),
    };
    for (ids, emails) in inserted {
        users.ids.extend(ids);
        users.emails.extend(emails);
    }
    if users.ids.len() != n {
        return Err(format!(
            "seeding by SQL: {} users inserted of {n} (addresses already taken?)",
            users.ids.len()
        ));
    }
    let vacuumed = Instant::now();
    sqlx::query("VACUUM (ANALYZE) users")
        .execute(&pool)
        .await
        .map_err(|e| format!("seeding by SQL: VACUUM (ANALYZE) users: {e}"))?;
    pool.close().await;
    eprintln!(
        "seeded {n} users by SQL in {:.1} s (insert {insert_secs:.1} s, vacuum and analyze {:.1} s)",
        started.elapsed().as_secs_f64(),
        vacuumed.elapsed().as_secs_f64()
    );
    Ok(users)
}

/// Users `from..=to`; their ids and emails, as inserted.
async fn insert_part(
    pool: &PgPool,
    from: usize,
    to: usize,
    tag: &str,
    first_ms: i64,
) -> Result<(Vec<String>, Vec<String>), String> {
    let as_i64 = |v: usize| i64::try_from(v).map_err(|_| "--users: too many".to_owned());
    let mut rows = sqlx::query_as::<_, (Uuid, String)>(INSERT)
        .bind(as_i64(from)?)
        .bind(as_i64(to)?)
        .bind(tag)
        .bind(first_ms)
        .bind(PASSWORD_HASH)
        .fetch(pool);
    let (mut ids, mut emails) = (Vec::new(), Vec::new());
    while let Some((id, email)) = rows
        .try_next()
        .await
        .map_err(|e| format!("seeding by SQL: {e}"))?
    {
        ids.push(id.hyphenated().to_string());
        emails.push(email);
    }
    Ok((ids, emails))
}
