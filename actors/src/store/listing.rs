//! `users.list`: a page of users newest first, read straight from PostgreSQL (a listing is
//! not the cache's business), and the token of the page after it.

use serde_json::{Value, json};

use super::db::Db;
use super::rows::{self, Listed};
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::request::{ListUsers, PageToken};
use user_domain::{Timestamp, views};

pub(super) async fn page(db: &Db, q: &ListUsers) -> Result<Reply, CoreError> {
    let mut users = db.asked(rows::fetch_page(&db.pool, &db.keys, q)).await?;
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    let more = users.len() > limit;
    users.truncate(limit);
    let next = users.last().filter(|_| more).map(|last| {
        PageToken {
            created_at: last.created_at,
            id: last.user.id,
        }
        .encode()
    });
    let data: Vec<Value> = users.iter().map(view).collect();
    Ok(Reply::ok(json!({"data": data, "nextPageToken": next})))
}

/// The user's view; a deleted user's says when it was deleted.
fn view(listed: &Listed) -> Value {
    let mut v = views::user(&listed.user);
    if let (Some(at), Value::Object(m)) = (listed.deleted_at, &mut v) {
        m.insert(
            "deletedAt".to_owned(),
            Value::String(Timestamp::from(at).to_string()),
        );
    }
    v
}
