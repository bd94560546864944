//! `users.search`: public profiles of users found by name or e-mail, a page at a time, read
//! straight from PostgreSQL. By name, users whose name starts with the query come first, then
//! those whose name only contains it; each group by name, then id. Pages are cut by keyset on
//! that order (see [`SearchToken`]).

use sqlx::{FromRow, PgExecutor, Postgres, QueryBuilder};

use super::db::Db;
use super::db_error;
use super::listing::paged;
use super::rows::{UserRow, select_users};
use crate::crypto::BillingKeys;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::request::{Looking, Purpose, SUBSTRING_MIN_CHARS, SearchToken, SearchUsers};
use user_domain::{User, views};

pub(super) async fn page(db: &Db, q: &SearchUsers) -> Result<Reply, CoreError> {
    let found = db.asked(fetch(&db.pool, &db.keys, q)).await?;
    let token = |f: &Found| {
        SearchToken {
            inside: f.inside,
            name_key: f.name_key.clone(),
            id: f.user.id,
        }
        .encode()
    };
    let view = |f: &Found| views::public_profile(&f.user);
    Ok(paged(found, q.limit, token, view))
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

/// Up to `q.limit + 1` users in the search's order (the one past the limit says that another
/// page follows).
async fn fetch(
    db: impl PgExecutor<'_>,
    keys: &BillingKeys,
    q: &SearchUsers,
) -> Result<Vec<Found>, CoreError> {
    #[derive(FromRow)]
    struct Row {
        inside: bool,
        name_key: String,
        #[sqlx(flatten)]
        user: UserRow,
    }
    let key = match &q.looking {
        Looking::Name(key) => key.as_str(),
        Looking::Email(_) => "",
    };
    let mut sql = QueryBuilder::<Postgres>::new("SELECT NOT starts_with(name_key, ");
    sql.push_bind(key).push(") AS inside, found.* FROM (");
    sql.push(select_users!("name_key, ", "WHERE deleted_at IS NULL"));
    match &q.looking {
        Looking::Name(key) => {
            let pattern = match key.chars().count() >= SUBSTRING_MIN_CHARS {
                true => format!("%{}%", literal(key)),
                false => format!("{}%", literal(key)),
            };
            sql.push(" AND name_key LIKE ").push_bind(pattern);
            // A private profile is never found by name.
            sql.push(" AND privacy_settings->>'profileVisibility' IS DISTINCT FROM 'private'");
        }
        Looking::Email(email) => {
            sql.push(" AND lower(email) = ").push_bind(email.as_ref());
        }
    }
    if q.purpose == Some(Purpose::Friends) {
        sql.push(" AND privacy_settings->>'allowFriendRequests' IS DISTINCT FROM 'false'");
    }
    sql.push(") found");
    if let Some(after) = &q.after {
        sql.push(" WHERE (NOT starts_with(name_key, ")
            .push_bind(key)
            .push("), name_key, id) > (")
            .push_bind(after.inside)
            .push(", ")
            .push_bind(after.name_key.clone())
            .push(", ")
            .push_bind(after.id.as_uuid())
            .push(")");
    }
    sql.push(" ORDER BY inside, name_key, id LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    let rows: Vec<Row> = sql.build_query_as().fetch_all(db).await.map_err(db_error)?;
    rows.into_iter()
        .map(|r| {
            Ok(Found {
                inside: r.inside,
                name_key: r.name_key,
                user: r.user.into_user(keys)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(super::literal(r"50%_a\b"), r"50\%\_a\\b");
    }
}
