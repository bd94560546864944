//! What callers see of a user: the JSON shapes every read and write returns.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::CoreError;
use crate::json::Projection;
use crate::request::ProfileOptions;
use crate::{
    AvatarUrl, Email, PasswordHash, Preferences, PrivacySettings, ProfileVisibility, Timestamp,
    User, UserId, UserName,
};

/// A user with its full public view serialised once: what the cache holds and reads
/// answer with, so that serving it is a copy of text.
#[derive(Debug)]
pub struct Rendered {
    pub user: User,
    json: Box<RawValue>,
}

impl Rendered {
    pub fn new(user: User) -> Result<Arc<Self>, CoreError> {
        let json = serde_json::value::to_raw_value(&user)
            .map_err(|e| CoreError::Internal(format!("a user does not serialise: {e}")))?;
        Ok(Arc::new(Self { user, json }))
    }

    /// The JSON of [`user`].
    pub fn json(&self) -> &RawValue {
        &self.json
    }
}

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

/// A profile: identity and account state, plus the sub-objects the options ask for.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Profile<'a> {
    id: &'a UserId,
    email: &'a Email,
    name: &'a UserName,
    avatar_url: &'a Option<AvatarUrl>,
    is_active: bool,
    last_login_at: &'a Option<Timestamp>,
    created_at: &'a Timestamp,
    updated_at: &'a Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferences: Option<&'a Preferences>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy_settings: Option<&'a PrivacySettings>,
}

pub fn profile(u: &User, options: ProfileOptions) -> Profile<'_> {
    Profile {
        id: &u.id,
        email: &u.email,
        name: &u.name,
        avatar_url: &u.avatar_url,
        is_active: u.is_active,
        last_login_at: &u.last_login_at,
        created_at: &u.created_at,
        updated_at: &u.updated_at,
        preferences: options.include_preferences.then_some(&u.preferences),
        privacy_settings: options
            .include_privacy_settings
            .then_some(&u.privacy_settings),
    }
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
