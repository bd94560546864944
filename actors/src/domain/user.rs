use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    AvatarUrl, BillingInfo, BillingStats, Email, Metadata, PasswordHash, Preferences,
    PrivacySettings, Timestamp, UserId, UserName,
};

/// One user as stored, with every default filled in. Serialises to the full public view;
/// the password hash is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: UserName,
    #[serde(skip)]
    pub password_hash: PasswordHash,
    pub avatar_url: Option<AvatarUrl>,
    pub is_active: bool,
    pub last_login_at: Option<Timestamp>,
    pub last_login_ip: Option<IpAddr>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub preferences: Preferences,
    pub privacy_settings: PrivacySettings,
    pub billing_info: Option<BillingInfo>,
    pub billing_stats: BillingStats,
    pub metadata: Metadata,
}

/// The body of `users.create` (and each item of `users.batchCreate`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
    /// Already hashed by the caller.
    pub password: PasswordHash,
}

/// The part of a user that `users.update` may change. A merge patch is applied to this
/// document and the result deserialised again, so every rule holds after the merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditableUser {
    pub name: UserName,
    pub email: Email,
    #[serde(default)]
    pub avatar_url: Option<AvatarUrl>,
    #[serde(default = "active_by_default")]
    pub is_active: bool,
    #[serde(default)]
    pub metadata: Metadata,
}

fn active_by_default() -> bool {
    true
}

impl From<&User> for EditableUser {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            email: u.email.clone(),
            avatar_url: u.avatar_url.clone(),
            is_active: u.is_active,
            metadata: u.metadata.clone(),
        }
    }
}
