//! `users.search`: public profiles of users found by name or e-mail, a page at a time, read
//! straight from PostgreSQL. By name, users whose name starts with the query come first, by
//! name, then id; then those whose name only contains it, newest first. Pages are cut by
//! keyset on that order (see [`SearchToken`]).

use sqlx::types::Uuid;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

use super::db::Db;
use super::db_error;
use super::listing::{cut, page};
use super::rows::{UserRow, select_users, user_columns};
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::request::{Looking, Purpose, SUBSTRING_MIN_CHARS, SearchToken, SearchUsers};
use user_domain::{User, views};

pub(super) async fn find(db: &Db, q: &SearchUsers) -> Result<Reply, CoreError> {
    let found = db
        .asked("users", || fetch(db.readers.pool(), q))
        .await?
        .into_iter()
        .map(|r| r.into_found(&db.keys))
        .collect::<Result<Vec<_>, _>>()?;
    let token = |f: &Found| {
        SearchToken {
            inside: f.inside,
            // The names containing the query are cut by id alone.
            name_key: match f.inside {
                true => String::new(),
                false => f.name_key.clone(),
            },
            id: f.user.id,
        }
        .encode()
    };
    let view = |f: &Found| views::public_profile(&f.user);
    let (found, next) = cut(found, q.limit, token);
    page(&found.iter().map(view).collect::<Vec<_>>(), next)
}

struct Found {
    user: User,
    /// The name contains the query but does not start with it.
    inside: bool,
    name_key: String,
}

/// `%`, `_` and `\` taken literally in a `LIKE` pattern.
fn literal(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The order of the names starting with the query: byte-wise whatever the database's
/// collation, as the index `users_name_key_order_idx` holds it.
const BY_NAME: &str = r#"name_key COLLATE "C", id"#;

/// How many of the newest users a search for names containing its query tests first, and
/// how many more when that found some but too few (or none, of a query the index cannot
/// narrow: such queries are looked for in these walks only), before it turns to the trigram
/// index (`users_search_inside`, `migrations/20261207000016_users_search_words.sql`). At a
/// million users on 2 cores a name walked costs about 0.07 µs and a user the index gives
/// about 9 µs (a read of the table): a query held by some of the first 5 000 is common
/// enough that walking on is cheaper, and one held by none of them is rare enough that the
/// index is. Walking 50 000 in all balances the two at their worst (a query just too rare
/// to fill a page of 20 in the walk: about 3.5 ms walking, then as long for the index's few
/// hundred), measured with `scripts/seed-users.sh`; see docs/performance.md.
pub const WALK: i32 = 5_000;
pub const FURTHER: i32 = 45_000;

/// The names containing the query, newest first (`users_search_inside`): the query's key,
/// the id below which to look, whether for a friend request, the room left, [`WALK`],
/// [`FURTHER`].
pub const INSIDE: &str = concat!(
    "SELECT true AS inside, name_key, ",
    user_columns!(),
    " FROM users_search_inside($1, $2, $3, $4, $5, $6)"
);

#[derive(FromRow)]
struct Row {
    inside: bool,
    name_key: String,
    #[sqlx(flatten)]
    user: UserRow,
}

impl Row {
    fn into_found(self, keys: &BillingKeys) -> Result<Found, CoreError> {
        Ok(Found {
            inside: self.inside,
            name_key: self.name_key,
            user: self.user.into_user(keys)?,
        })
    }
}

/// Up to `q.limit + 1` rows in the search's order (the one past the limit says that another
/// page follows): the names starting with the query, read in [`BY_NAME`] order from the
/// page's start; then, when the page has room and the query 3 characters or more, the
/// names containing it ([`INSIDE`]).
async fn fetch(db: &PgPool, q: &SearchUsers) -> Result<Vec<Row>, CoreError> {
    let limit = i64::from(q.limit) + 1;
    let after_inside = q.after.as_ref().is_some_and(|a| a.inside);
    let mut rows: Vec<Row> = Vec::new();
    if !after_inside {
        let mut sql = QueryBuilder::<Postgres>::new(select_users!(
            "false AS inside, name_key, ",
            "WHERE deleted_at IS NULL"
        ));
        match &q.looking {
            Looking::Name(key) => {
                sql.push(r#" AND name_key COLLATE "C" LIKE "#)
                    .push_bind(format!("{}%", literal(key)))
                    .push(" AND users_findable(users, ")
                    .push_bind(q.purpose == Some(Purpose::Friends))
                    .push(")");
            }
            Looking::Email(email) => {
                sql.push(" AND lower(email) = ").push_bind(email.as_ref());
                if q.purpose == Some(Purpose::Friends) {
                    sql.push(
                        " AND privacy_settings->>'allowFriendRequests' IS DISTINCT FROM 'false'",
                    );
                }
            }
        }
        if let Some(after) = &q.after {
            sql.push(format!(" AND ({BY_NAME}) > ("))
                .push_bind(after.name_key.clone())
                .push(", ")
                .push_bind(after.id.as_uuid())
                .push(")");
        }
        sql.push(format!(" ORDER BY {BY_NAME} LIMIT "))
            .push_bind(limit);
        rows = sql.build_query_as().fetch_all(db).await.map_err(db_error)?;
    }
    let room = limit - i64::try_from(rows.len()).unwrap_or(limit);
    if let Looking::Name(key) = &q.looking
        && room > 0
        && key.chars().count() >= SUBSTRING_MIN_CHARS
    {
        let below = match &q.after {
            Some(after) if after.inside => after.id.as_uuid(),
            _ => Uuid::max(),
        };
        let inside: Vec<Row> = sqlx::query_as(INSIDE)
            .bind(key)
            .bind(below)
            .bind(q.purpose == Some(Purpose::Friends))
            .bind(i32::try_from(room).unwrap_or(i32::MAX))
            .bind(WALK)
            .bind(FURTHER)
            .fetch_all(db)
            .await
            .map_err(db_error)?;
        rows.extend(inside);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(super::literal(r"50%_a\b"), r"50\%\_a\\b");
    }
}
