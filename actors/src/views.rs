//! What callers see of a user: the JSON shapes every read and write returns.

use serde_json::{Map, Value, json};

use crate::domain::{PasswordHash, ProfileVisibility, User};
use crate::json::Projection;
use crate::request::ProfileOptions;

/// The full public view: every field with defaults filled in, never the password hash.
pub fn user(u: &User) -> Value {
    serde_json::to_value(u).unwrap_or(Value::Null)
}

/// The full view plus `passwordHash`, for credential readers only.
pub fn with_credentials(u: &User, hash: &PasswordHash) -> Value {
    let mut v = user(u);
    if let Value::Object(m) = &mut v {
        m.insert("passwordHash".to_owned(), Value::String(hash.to_string()));
    }
    v
}

/// The full view, or only the projected fields.
pub fn projected(u: &User, fields: Option<&Projection>) -> Value {
    match fields {
        Some(p) => p.apply(&user(u)),
        None => user(u),
    }
}

const PROFILE_FIELDS: [&str; 8] = [
    "id",
    "email",
    "name",
    "avatarUrl",
    "isActive",
    "lastLoginAt",
    "createdAt",
    "updatedAt",
];

/// A profile: identity and account state, plus the sub-objects the options ask for.
pub fn profile(u: &User, options: ProfileOptions) -> Value {
    let full = user(u);
    let mut out = Map::new();
    let mut take = |key: &str| {
        out.insert(
            key.to_owned(),
            full.get(key).cloned().unwrap_or(Value::Null),
        );
    };
    PROFILE_FIELDS.iter().for_each(|k| take(k));
    if options.include_preferences {
        take("preferences");
    }
    if options.include_privacy_settings {
        take("privacySettings");
    }
    Value::Object(out)
}

/// What anyone may see: never email, billing, preferences or login data.
pub fn public_profile(u: &User) -> Value {
    let visibility = u.privacy_settings.profile_visibility;
    let mut v = json!({
        "id": u.id,
        "name": u.name,
        "avatarUrl": u.avatar_url,
        "profileVisibility": visibility,
    });
    if visibility == ProfileVisibility::Public {
        v["createdAt"] = json!(u.created_at);
    }
    v
}

pub fn billing(u: &User) -> Value {
    json!({
        "userId": u.id,
        "name": u.name,
        "email": u.email,
        "billingInfo": u.billing_info,
        "billingStats": u.billing_stats,
    })
}

pub fn preferences(u: &User) -> Value {
    serde_json::to_value(&u.preferences).unwrap_or(Value::Null)
}

pub fn privacy_settings(u: &User) -> Value {
    serde_json::to_value(&u.privacy_settings).unwrap_or(Value::Null)
}
