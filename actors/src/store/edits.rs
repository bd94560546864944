//! Every update as a pure function: the user before, the request, and out come the user
//! after and the events that describe the difference. The store only loads and saves.

use std::net::IpAddr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use user_domain::error::{CoreError, from_json};
use user_domain::events::{Event, EventType, Origin};
use user_domain::json::{Changes, diff};
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::request::{Patch, Payment};
use user_domain::{EditableUser, Timestamp, User};

/// The outcome of an edit. No events means nothing changed and nothing is written.
pub(super) struct Edit {
    pub user: User,
    pub events: Vec<Event>,
}

/// Applies a merge patch to `current`'s JSON form and reads the result back, so the
/// merged document passes every rule a new one would (unknown fields, types, ranges).
fn merged<T: Serialize + DeserializeOwned>(current: &T, patch: &Patch) -> Result<T, CoreError> {
    let mut doc = serde_json::to_value(current)
        .map_err(|e| CoreError::Internal(format!("serialising for a merge: {e}")))?;
    if let Some((path, why)) = refused(&doc, patch, "") {
        return Err(CoreError::invalid(path, why));
    }
    json_patch::merge(&mut doc, &Value::Object(patch.clone()));
    from_json(doc, "")
}

/// The first field the merge would let through unchecked, and why: one the patch sets to
/// `null` that `doc` does not have (merging would drop it silently, where any other value
/// for it is refused as unknown), or a list where `doc` has an object (serde reads a struct
/// from a list too, so `{"notifications": []}` would pass as "all defaults"). (`metadata` is
/// free-form: removing an absent key of it is fine.)
fn refused(doc: &Value, patch: &Patch, prefix: &str) -> Option<(String, &'static str)> {
    patch.iter().find_map(|(k, v)| {
        // An unknown name is the caller's: cut, as every error quotes input.
        let name = cut(k, QUOTE_CHARS);
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}.{name}")
        };
        match (doc.get(k), v) {
            (None, Value::Null) => Some((path, "unknown field")),
            (Some(Value::Object(_)), Value::Array(_)) => Some((path, "must be an object")),
            (Some(inner @ Value::Object(_)), Value::Object(nested)) if path != "metadata" => {
                refused(inner, nested, &path)
            }
            _ => None,
        }
    })
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `{key: value}`, so that diff paths start with `key`.
fn under(key: &str, v: Value) -> Value {
    Value::Object(Map::from_iter([(key.to_owned(), v)]))
}

fn events(
    u: &User,
    origin: &Origin,
    parts: impl IntoIterator<Item = (EventType, Value, Value)>,
) -> Vec<Event> {
    parts
        .into_iter()
        .filter_map(|(t, before, after)| Event::for_changes(t, u.id, origin, diff(&before, &after)))
        .collect()
}

/// `users.update`: name, email, isActive and metadata are account data (USER_UPDATED);
/// avatarUrl is profile data (PROFILE_UPDATED).
pub(super) fn update(u: &User, patch: &Patch, origin: &Origin) -> Result<Edit, CoreError> {
    let before = EditableUser::from(u);
    let after = merged(&before, patch)?;
    let split = |e: &EditableUser| {
        let mut account = to_json(e);
        let avatar = account.as_object_mut().and_then(|m| m.remove("avatarUrl"));
        (account, under("avatarUrl", avatar.unwrap_or(Value::Null)))
    };
    let (account_before, profile_before) = split(&before);
    let (account_after, profile_after) = split(&after);
    let events = events(
        u,
        origin,
        [
            (EventType::UserUpdated, account_before, account_after),
            (EventType::ProfileUpdated, profile_before, profile_after),
        ],
    );
    let user = User {
        name: after.name,
        email: after.email,
        avatar_url: after.avatar_url,
        is_active: after.is_active,
        metadata: after.metadata,
        ..u.clone()
    };
    Ok(Edit { user, events })
}

pub(super) fn preferences(u: &User, patch: &Patch, origin: &Origin) -> Result<Edit, CoreError> {
    let after = merged(&u.preferences, patch)?;
    let events = events(
        u,
        origin,
        [(
            EventType::PreferencesChanged,
            to_json(&u.preferences),
            to_json(&after),
        )],
    );
    Ok(Edit {
        user: User {
            preferences: after,
            ..u.clone()
        },
        events,
    })
}

pub(super) fn privacy(u: &User, patch: &Patch, origin: &Origin) -> Result<Edit, CoreError> {
    let after = merged(&u.privacy_settings, patch)?;
    let events = events(
        u,
        origin,
        [(
            EventType::ProfileUpdated,
            under("privacySettings", to_json(&u.privacy_settings)),
            under("privacySettings", to_json(&after)),
        )],
    );
    Ok(Edit {
        user: User {
            privacy_settings: after,
            ..u.clone()
        },
        events,
    })
}

/// Billing info starts out null; the first patch creates it, with defaults for the rest.
pub(super) fn billing(u: &User, patch: &Patch, origin: &Origin) -> Result<Edit, CoreError> {
    if patch.is_empty() {
        return Ok(Edit {
            user: u.clone(),
            events: Vec::new(),
        });
    }
    let after = merged(&u.billing_info.clone().unwrap_or_default(), patch)?;
    // Billing values never leave the service: the event names the changed paths only
    // (every leaf, when the billing info is new).
    let before = u.billing_info.as_ref().map_or_else(|| json!({}), to_json);
    let changed = diff(
        &under("billingInfo", before),
        &under("billingInfo", to_json(&after)),
    )
    .changed;
    let paths_only = Changes {
        changed,
        previous: json!({}),
        current: json!({}),
    };
    let events = Event::for_changes(EventType::UserUpdated, u.id, origin, paths_only)
        .into_iter()
        .collect();
    Ok(Edit {
        user: User {
            billing_info: Some(after),
            ..u.clone()
        },
        events,
    })
}

/// A login is an event even when it repeats the previous one.
pub(super) fn login(u: &User, at: Option<Timestamp>, ip: Option<IpAddr>, origin: &Origin) -> Edit {
    let at = at.unwrap_or_else(Timestamp::now);
    let user = User {
        last_login_at: Some(at),
        last_login_ip: ip,
        ..u.clone()
    };
    let data = json!({"lastLoginAt": at, "ipAddress": ip});
    let events = vec![Event::new(EventType::UserLoggedIn, u.id, origin, data)];
    Edit { user, events }
}

pub(super) fn payment(u: &User, p: &Payment, origin: &Origin) -> Result<Edit, CoreError> {
    let paid_at = p.paid_at.unwrap_or_else(Timestamp::now);
    let mut stats = u.billing_stats.clone();
    stats.total_spent = stats
        .total_spent
        .checked_add(p.amount)
        .ok_or_else(|| CoreError::invalid("amount", "would overflow the user's total"))?;
    stats.payments_count += 1;
    stats.last_payment_at = stats.last_payment_at.max(Some(paid_at));
    let events = events(
        u,
        origin,
        [(
            EventType::UserUpdated,
            under("billingStats", to_json(&u.billing_stats)),
            under("billingStats", to_json(&stats)),
        )],
    );
    Ok(Edit {
        user: User {
            billing_stats: stats,
            ..u.clone()
        },
        events,
    })
}

#[cfg(test)]
mod tests;
