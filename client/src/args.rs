//! The arguments the typed calls take and the typed answers they give, under the contract's
//! names.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The body of `users.create` and each item of `users.batchCreate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewUser {
    pub name: String,
    pub email: String,
    /// Already hashed by the caller (bcrypt, argon2 or scrypt); sent as `password`.
    #[serde(rename = "password")]
    pub password_hash: String,
}

impl NewUser {
    pub fn new(
        name: impl Into<String>,
        email: impl Into<String>,
        password_hash: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            email: email.into(),
            password_hash: password_hash.into(),
        }
    }
}

/// A login to record (`users.recordLogin`); by default at the service's now, with no IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

impl Login {
    pub fn now() -> Self {
        Self::default()
    }

    /// When it happened: RFC 3339.
    pub fn at(mut self, timestamp: impl Into<String>) -> Self {
        self.last_login_at = Some(timestamp.into());
        self
    }

    /// From where: an IPv4 or IPv6 address.
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip_address = Some(ip.into());
        self
    }
}

/// A change to a user (`users.update`): only what is set is sent (a JSON merge patch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch(pub(crate) Map<String, Value>);

impl UserPatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn name(self, name: impl Into<String>) -> Self {
        self.set("name", Value::String(name.into()))
    }

    pub fn email(self, email: impl Into<String>) -> Self {
        self.set("email", Value::String(email.into()))
    }

    /// `None` clears the avatar.
    pub fn avatar_url(self, url: Option<&str>) -> Self {
        self.set(
            "avatarUrl",
            url.map_or(Value::Null, |u| Value::String(u.to_owned())),
        )
    }

    pub fn active(self, active: bool) -> Self {
        self.set("isActive", Value::Bool(active))
    }

    /// Merged into the stored metadata (RFC 7396: `null` removes a key).
    pub fn metadata(self, patch: Value) -> Self {
        self.set("metadata", patch)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn set(mut self, field: &str, value: Value) -> Self {
        self.0.insert(field.to_owned(), value);
        self
    }
}

/// Options of `users.getProfile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOptions {
    pub include_preferences: bool,
    pub include_privacy_settings: bool,
    /// Only `id`, `name`, `avatarUrl`, `profileVisibility` (and `createdAt` when public).
    pub public_only: bool,
}

impl ProfileOptions {
    pub fn with_preferences(mut self) -> Self {
        self.include_preferences = true;
        self
    }

    pub fn with_privacy_settings(mut self) -> Self {
        self.include_privacy_settings = true;
        self
    }

    pub fn public_only(mut self) -> Self {
        self.public_only = true;
        self
    }
}

/// Options of `users.batchProfiles`. When `fields` is not empty it alone decides what is
/// returned (the include flags then add nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchProfilesOptions {
    pub include_preferences: bool,
    pub include_privacy_settings: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl BatchProfilesOptions {
    pub fn with_preferences(mut self) -> Self {
        self.include_preferences = true;
        self
    }

    pub fn with_privacy_settings(mut self) -> Self {
        self.include_privacy_settings = true;
        self
    }

    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
}

/// A payment to record (`users.recordPayment`), idempotent on `payment_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: String,
    /// A decimal string with at most 2 places, e.g. `"1499.50"` (exact, unlike a float).
    pub amount: String,
    /// ISO 4217; the service's default when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// RFC 3339; now when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
}

impl Payment {
    pub fn new(payment_id: impl Into<String>, amount: impl Into<String>) -> Self {
        Self {
            payment_id: payment_id.into(),
            amount: amount.into(),
            currency: None,
            paid_at: None,
        }
    }

    pub fn currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = Some(currency.into());
        self
    }

    pub fn paid_at(mut self, timestamp: impl Into<String>) -> Self {
        self.paid_at = Some(timestamp.into());
        self
    }
}

/// The answer of `users.batchCreate`: one item per user sent, in order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchCreateResult {
    pub results: Vec<BatchCreateItem>,
    pub stats: BatchCreateStats,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchCreateItem {
    /// The position in the batch sent.
    pub index: usize,
    pub status: BatchItemStatus,
    /// The new user's id, when created.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// Why not, when not: `{code, message, details?}`.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchItemStatus {
    Created,
    /// The email is taken (by a stored user or an earlier item of the batch).
    Conflict,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BatchCreateStats {
    pub requested: usize,
    pub created: usize,
    pub conflict: usize,
    pub invalid: usize,
}
