//! `users.list`: a page of users newest first, read straight from PostgreSQL (a listing is
//! not the cache's business), and the token of the page after it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor, Postgres, QueryBuilder};

use super::db::Db;
use super::db_error;
use super::rows::{UserRow, select_users};
use crate::crypto::BillingKeys;
use user_domain::call::{Data, Reply};
use user_domain::error::CoreError;
use user_domain::request::{Deleted, ListUsers, PageToken};
use user_domain::{Timestamp, User, UserId};

pub(super) async fn list(db: &Db, q: &ListUsers) -> Result<Reply, CoreError> {
    let rows = db.asked("users", || fetch(db.readers.pool(), q)).await?;
    let users = rows
        .into_iter()
        .map(|r| r.into_listed(&db.keys))
        .collect::<Result<Vec<_>, _>>()?;
    let token = |last: &Listed| {
        PageToken {
            created_at: last.created_at,
            id: last.id,
        }
        .encode()
    };
    let (users, next) = cut(users, q.limit, token);
    page(&users.iter().map(view).collect::<Vec<_>>(), next)
}

/// `items` fetched one past `limit`, cut to the page, and the token of the page after it
/// (named by the last item shown; none when nothing was past the limit).
pub(super) fn cut<T>(
    mut items: Vec<T>,
    limit: u32,
    token: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = items.last().filter(|_| more).map(token);
    (items, next)
}

/// `{data, nextPageToken}`, rendered straight to JSON text.
pub(super) fn page(data: &[impl Serialize], next: Option<String>) -> Result<Reply, CoreError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Page<'a, V> {
        data: &'a [V],
        next_page_token: Option<String>,
    }
    let next_page_token = next;
    Data::render(&Page {
        data,
        next_page_token,
    })
    .map(Reply::ok)
}

/// One user of a listing, with what its page token and its view need beyond [`User`].
struct Listed {
    id: UserId,
    /// As stored, to the microsecond.
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    state: State,
}

enum State {
    Kept(Box<User>),
    /// Only its id and dates are left: a copy kept elsewhere learns to drop it.
    Erased {
        updated_at: DateTime<Utc>,
        erased_at: DateTime<Utc>,
    },
}

/// A user as a listing shows it.
#[derive(Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
enum View<'a> {
    /// The user's full view; a deleted user's says when it was deleted.
    Kept {
        #[serde(flatten)]
        user: &'a User,
        #[serde(skip_serializing_if = "Option::is_none")]
        deleted_at: Option<Timestamp>,
    },
    /// Its id and dates.
    Erased {
        id: UserId,
        created_at: Timestamp,
        updated_at: Timestamp,
        deleted_at: Option<Timestamp>,
        erased_at: Timestamp,
    },
}

fn view(listed: &Listed) -> View<'_> {
    let deleted_at = listed.deleted_at.map(Timestamp::from);
    match &listed.state {
        State::Kept(user) => View::Kept { user, deleted_at },
        State::Erased {
            updated_at,
            erased_at,
        } => View::Erased {
            id: listed.id,
            created_at: Timestamp::from(listed.created_at),
            updated_at: Timestamp::from(*updated_at),
            deleted_at,
            erased_at: Timestamp::from(*erased_at),
        },
    }
}

#[derive(FromRow)]
struct Row {
    deleted_at: Option<DateTime<Utc>>,
    erased_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    user: UserRow,
}

impl Row {
    fn into_listed(self, keys: &BillingKeys) -> Result<Listed, CoreError> {
        let (id, created_at) = (UserId::from(self.user.id), self.user.created_at);
        let state = match self.erased_at {
            Some(erased_at) => State::Erased {
                updated_at: self.user.updated_at,
                erased_at,
            },
            None => State::Kept(Box::new(self.user.into_user(keys)?)),
        };
        Ok(Listed {
            id,
            created_at,
            deleted_at: self.deleted_at,
            state,
        })
    }
}

/// Up to `q.limit + 1` rows of the listing `q` asks for, newest first (the one past the
/// limit says that another page follows).
async fn fetch(db: impl PgExecutor<'_>, q: &ListUsers) -> Result<Vec<Row>, CoreError> {
    let mut sql =
        QueryBuilder::<Postgres>::new(select_users!("deleted_at, erased_at, ", "WHERE true"));
    match q.deleted {
        Deleted::Live => sql.push(" AND deleted_at IS NULL"),
        Deleted::Deleted => sql.push(" AND deleted_at IS NOT NULL"),
        Deleted::Both => &mut sql,
    };
    if let Some(active) = q.is_active {
        sql.push(" AND is_active = ").push_bind(active);
    }
    if let Some(t) = q.created_after {
        sql.push(" AND created_at > ").push_bind(t.as_datetime());
    }
    if let Some(t) = q.created_before {
        sql.push(" AND created_at < ").push_bind(t.as_datetime());
    }
    if let Some(t) = q.updated_since {
        sql.push(" AND updated_at >= ").push_bind(t.as_datetime());
    }
    if let Some(after) = q.after {
        sql.push(" AND (created_at, id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id.as_uuid())
            .push(")");
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    sql.build_query_as().fetch_all(db).await.map_err(db_error)
}
