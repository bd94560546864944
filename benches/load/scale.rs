//! The scale set (`--only scale`, meant for `--users 1000000 --seed sql`): reads over every
//! seeded user, most of which no cache holds, beside PostgreSQL's own fetch of the same rows.
//!
//! * `scale-get`, `scale-email`, `scale-batch100`: the requests of `rest-get`, `rest-email`
//!   and `rest-batch100`, uniform over all users, without the cache warming that precedes
//!   the ordinary reads.
//! * `scale-zipf`: user popularity follows Zipf's law with s = 1.1 (the user of rank *k* is
//!   read in proportion to k^−1.1); 80 % of the reads by id, 20 % by e-mail, of the same
//!   users. Ranks are scattered over the table (rank *k* is user *k* · 2654435761 mod *n*),
//!   so popular users are not neighbours in its pages.
//! * `ceil-sql-get`, `ceil-sql-email`, `ceil-sql-batch100`: PostgreSQL's indexed fetch of
//!   random seeded users, the columns the store reads (`actors/src/store/rows.rs`), through
//!   sqlx on a pool of the service's `DB_POOL_SIZE` (16, or the concurrency when smaller), at
//!   the same concurrency: one by `id = $1`, one by `lower(email) = $1` (`fetch_by_email`),
//!   100 by `id = ANY($1)` (`fetch_many`). `ceil-sql-list-deep`: `users.list`'s page of 100
//!   (one past it) after a random seeded user, for `scale-list-deep`.
//!   `ceil-sql-search-inside`: `users.search`'s statements for the query of
//!   `scale-search-inside` (names starting with it, then `users_search_inside` when the
//!   page has room), for `scale-search-inside`. Each row only arrives: nothing is decoded. The
//!   store fetches a single id with `fetch_many` too, but `id = ANY($1)` with one id makes
//!   about two thirds of `id = $1`'s throughput here (20k against 30k a second, 1 M users,
//!   32 callers): the ceiling is the fetch of the row, not of that statement.
//! * `scale-search-prefix`, `scale-search-inside`: `users.search` for the first 3 to 5
//!   letters of a seeded name, or 4 letters from inside one (a sample of 1 000 names drawn
//!   after the seeding), a page of 20.
//! * `scale-list-deep`: `users.list`, a page of 100 after a random seeded user: any depth, as
//!   deep as page 10 000 of 100 at a million users.
//!
//! Around each scale read's window the bench reads the service's cache counters
//! (`/health/integrations`, `cachePerformance`: `localHits`, `redisHits`, `misses`, since
//! start, for every reader) and reports which tier answered the users read in it. A batch
//! counts each of its ids. The cache is not emptied between workloads: the shares include
//! what the workloads before (and the warm-up) left in Redis (5 minutes) and in the
//! in-process copy (30 s), and a long uniform workload comes to hit its own earlier reads.

use std::sync::{Arc, LazyLock};

use hyper::Method;
use serde_json::{Value, json};
use sqlx::types::Uuid;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::time::Instant;
use user_core::store::{
    SEARCH_FURTHER, SEARCH_INSIDE, SEARCH_WALK, USER_BY_EMAIL, USER_BY_ID, USER_COLUMNS,
    USERS_BY_IDS,
};

use crate::http::Conn;
use crate::workloads::{Ctx, Rng, Workload};

/// Zipf's exponent for `scale-zipf`.
pub const ZIPF_S: f64 = 1.1;
/// Of `scale-zipf`'s reads, the share by e-mail (the rest by id).
pub const ZIPF_BY_EMAIL: f64 = 0.2;
/// A prime: multiplying by it modulo the number of users permutes them.
const SCATTER: u128 = 2_654_435_761;

/// Zipf's law over `n` users, as its cumulative distribution (8 bytes a user).
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                sum += (k as f64).powf(-s);
                sum
            })
            .collect();
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    /// The share of the reads that go to the most popular `share` of the users.
    pub fn head(&self, share: f64) -> f64 {
        let k = ((self.cdf.len() as f64 * share) as usize).clamp(1, self.cdf.len());
        self.cdf[k - 1]
    }

    /// The index of a user drawn by popularity.
    pub fn user(&self, rng: &mut Rng) -> usize {
        let n = self.cdf.len();
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&c| c <= u).min(n - 1);
        ((rank as u128 * SCATTER) % n as u128) as usize
    }
}

/// How many seeded names the searches draw their queries from.
pub const NAMES_SAMPLED: i64 = 1000;

/// A sample of the seeded names: the searches' queries come from them.
pub async fn sample_names(url: &str) -> Result<Vec<String>, String> {
    let pool = PgPool::connect(url).await.map_err(|e| e.to_string())?;
    let names = sqlx::query_scalar("SELECT name FROM users TABLESAMPLE SYSTEM (1) LIMIT $1")
        .bind(NAMES_SAMPLED)
        .fetch_all(&pool)
        .await
        .map_err(|e| format!("sampling names: {e}"));
    pool.close().await;
    names
}

/// The searches' page size.
pub const SEARCH_LIMIT: usize = 20;

/// A search's `q`: the first 3 to 5 letters of a sampled name (`scale-search-prefix`), or 4
/// letters from inside one, never its first (`scale-search-inside` and its ceiling).
pub fn search_query(names: &[String], w: Workload, rng: &mut Rng) -> Result<String, String> {
    if names.is_empty() {
        return Err("no names sampled".to_owned());
    }
    let name: Vec<char> = names[rng.below(names.len())].chars().collect();
    let (from, len) = match w {
        Workload::ScaleSearchPrefix => (0, 3 + rng.below(3)),
        _ => (1 + rng.below(name.len().saturating_sub(4).max(1)), 4),
    };
    Ok(name.iter().skip(from).take(len).collect())
}

/// The listing's page token just after the seeded user `id` (whose UUIDv7 holds its
/// creation time, to the millisecond, as the seeding wrote it).
pub fn page_token_at(id: &str) -> Result<String, String> {
    let token = user_domain::request::PageToken {
        created_at: uuid_time(id)?,
        id: user_domain::UserId::from(Uuid::try_parse(id).map_err(|e| e.to_string())?),
    };
    Ok(token.encode())
}

/// The creation time a seeded user's UUIDv7 holds.
fn uuid_time(id: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let id = Uuid::try_parse(id).map_err(|e| e.to_string())?;
    let ms = i64::try_from(id.as_u128() >> 80).map_err(|e| e.to_string())?;
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| "an id outside chrono's range".into())
}

/// `users.list`'s page of 100 (`actors/src/store/listing.rs`), one past it, after a user.
static PAGE_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {USER_COLUMNS} FROM users WHERE deleted_at IS NULL AND (created_at, id) < ($1, $2) \
         ORDER BY created_at DESC, id DESC LIMIT 101"
    )
});

/// `users.search`'s names starting with the query (`actors/src/store/search.rs`), one past
/// the page; then the names containing it ([`SEARCH_INSIDE`]), as many as the page has room
/// for, with the store's walks.
static NAMES_STARTING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT false AS inside, name_key, {USER_COLUMNS} FROM users WHERE deleted_at IS NULL \
         AND name_key COLLATE \"C\" LIKE $1 AND users_findable(users, false) \
         ORDER BY name_key COLLATE \"C\", id LIMIT $2"
    )
});

/// One request of a SQL read ceiling: the row(s) of random seeded users, as the store reads
/// them; an error unless every one came back.
pub async fn sql_read(pool: &PgPool, w: Workload, ctx: &Ctx, rng: &mut Rng) -> Result<(), String> {
    let users = &ctx.users;
    let (rows, expected) = match w {
        Workload::CeilSqlEmail => {
            let email = &users.emails[rng.below(users.emails.len())];
            let rows = sqlx::query(USER_BY_EMAIL).bind(email).fetch_all(pool).await;
            (rows, 1)
        }
        Workload::CeilSqlGet | Workload::CeilSqlBatch100 => {
            let n = if w == Workload::CeilSqlGet { 1 } else { 100 };
            let mut ids = (0..n)
                .map(|_| Uuid::try_parse(&users.ids[rng.below(users.ids.len())]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            ids.sort_unstable();
            ids.dedup();
            let rows = match (w, ids.as_slice()) {
                (Workload::CeilSqlGet, [id]) => {
                    sqlx::query(USER_BY_ID).bind(id).fetch_all(pool).await
                }
                _ => sqlx::query(USERS_BY_IDS).bind(&ids).fetch_all(pool).await,
            };
            (rows, ids.len())
        }
        Workload::CeilSqlListDeep => {
            let id = &users.ids[rng.below(users.ids.len())];
            let after = uuid_time(id)?;
            let id = Uuid::try_parse(id).map_err(|e| e.to_string())?;
            let rows = sqlx::query(AssertSqlSafe(PAGE_AFTER.as_str()))
                .bind(after)
                .bind(id)
                .fetch_all(pool)
                .await;
            // A page past the oldest users is shorter.
            let expected = rows.as_ref().map_or(0, |r| r.len().min(101));
            (rows, expected)
        }
        Workload::CeilSqlSearchInside => {
            let key = user_domain::request::name_key(&search_query(&ctx.names, w, rng)?);
            let page = i64::try_from(SEARCH_LIMIT + 1).map_err(|e| e.to_string())?;
            let starting = sqlx::query(AssertSqlSafe(NAMES_STARTING.as_str()))
                .bind(format!("{key}%"))
                .bind(page)
                .fetch_all(pool)
                .await
                .map_err(|e| format!("sql: {e}"))?;
            let room = page - i64::try_from(starting.len()).map_err(|e| e.to_string())?;
            let rows = match room {
                0 => Ok(starting),
                _ => {
                    sqlx::query(SEARCH_INSIDE)
                        .bind(&key)
                        .bind(Uuid::max())
                        .bind(false)
                        .bind(i32::try_from(room).map_err(|e| e.to_string())?)
                        .bind(SEARCH_WALK)
                        .bind(SEARCH_FURTHER)
                        .fetch_all(pool)
                        .await
                }
            };
            // Any number of users may hold the query.
            let expected = rows.as_ref().map_or(0, Vec::len);
            (rows, expected)
        }
        other => return Err(format!("{} is not a SQL read", other.name())),
    };
    let rows = rows.map_err(|e| format!("sql: {e}"))?;
    if rows.len() == expected {
        Ok(())
    } else {
        Err(format!("sql: {} rows of {expected}", rows.len()))
    }
}

/// Users read, by the cache tier that answered them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tiers {
    pub local: u64,
    pub redis: u64,
    pub misses: u64,
}

impl Tiers {
    pub fn add(&mut self, other: Tiers) {
        self.local += other.local;
        self.redis += other.redis;
        self.misses += other.misses;
    }

    fn since(self, before: Tiers) -> Tiers {
        Tiers {
            local: self.local.saturating_sub(before.local),
            redis: self.redis.saturating_sub(before.redis),
            misses: self.misses.saturating_sub(before.misses),
        }
    }

    fn total(self) -> u64 {
        self.local + self.redis + self.misses
    }

    /// Local hits, Redis hits and misses, as percentages of the users read.
    pub fn percentages(self) -> Option<[f64; 3]> {
        let all = self.total() as f64;
        (all > 0.0).then(|| {
            [self.local, self.redis, self.misses].map(|n| (n as f64 * 1000.0 / all).round() / 10.0)
        })
    }

    pub fn json(self) -> Value {
        let pct = self.percentages();
        json!({
            "localHits": self.local, "redisHits": self.redis, "misses": self.misses,
            "localPct": pct.map(|p| p[0]), "redisPct": pct.map(|p| p[1]),
            "missPct": pct.map(|p| p[2]),
        })
    }
}

impl Ctx {
    /// The service's cache counters since it started.
    async fn tiers(&self, conn: &mut Conn) -> Result<Tiers, String> {
        let path = "/health/integrations".to_owned();
        let (_, body) = self
            .send(conn, &self.base, Method::GET, path, None, None)
            .await?;
        let health: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let cache = &health["cachePerformance"];
        let count = |k: &str| {
            cache[k]
                .as_u64()
                .ok_or_else(|| format!("/health/integrations: no cachePerformance.{k}"))
        };
        Ok(Tiers {
            local: count("localHits")?,
            redis: count("redisHits")?,
            misses: count("misses")?,
        })
    }
}

/// Reads the cache counters at `from` and at `until` (the measured window); what changed.
pub fn watch_tiers(
    ctx: Arc<Ctx>,
    from: Instant,
    until: Instant,
) -> tokio::task::JoinHandle<Option<Tiers>> {
    tokio::spawn(async move {
        let mut conn = Conn::default();
        tokio::time::sleep_until(from).await;
        let before = ctx.tiers(&mut conn).await;
        tokio::time::sleep_until(until).await;
        let after = ctx.tiers(&mut conn).await;
        match (before, after) {
            (Ok(b), Ok(a)) => Some(a.since(b)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("  the cache counters could not be read: {e}");
                None
            }
        }
    })
}
