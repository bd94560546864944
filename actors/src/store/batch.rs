//! Batch reads: answers in the order asked, written straight from the rendered users.

use serde_json::{Value, json};

use super::db::Db;
use user_domain::UserId;
use user_domain::call::{Data, Reply};
use user_domain::error::CoreError;
use user_domain::views::{self, Rendered};

/// One user in a batch answer.
pub(super) enum Item<'a> {
    Raw(&'a serde_json::value::RawValue),
    Profile(views::Profile<'a>),
    Value(Value),
}

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Raw(raw) => raw.serialize(s),
            Self::Profile(p) => p.serialize(s),
            Self::Value(v) => v.serialize(s),
        }
    }
}

/// `{<key>: [users], missing, stats}`, written out directly.
struct Answer<'a> {
    key: &'static str,
    items: Vec<Item<'a>>,
    missing: Vec<&'a UserId>,
    requested: usize,
}

impl serde::Serialize for Answer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry(self.key, &self.items)?;
        m.serialize_entry("missing", &self.missing)?;
        let stats = json!({"requested": self.requested, "found": self.items.len(),
                           "missing": self.missing.len()});
        m.serialize_entry("stats", &stats)?;
        m.end()
    }
}

/// Answers in the order asked, each id once; ids not found (or deleted) are listed as
/// missing. A batch of cached users is mostly a copy of their rendered JSON.
pub(super) async fn batch(
    db: &Db,
    ids: &[UserId],
    caller: &str,
    key: &'static str,
    view: impl for<'u> Fn(&'u Rendered) -> Item<'u>,
) -> Result<Reply, CoreError> {
    let found = db.find(ids, caller).await?;
    let mut answer = Answer {
        key,
        items: Vec::with_capacity(ids.len()),
        missing: Vec::new(),
        requested: ids.len(),
    };
    for (id, u) in ids.iter().zip(&found) {
        match u {
            Some(u) => answer.items.push(view(u)),
            None => answer.missing.push(id),
        }
    }
    Data::render(&answer).map(Reply::ok)
}
