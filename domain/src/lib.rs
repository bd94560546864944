//! The domain of user-service, shared by the service and its callers: the user and its
//! parts as types that are valid by construction (serde deserialisation goes through the same
//! checks, so a value that exists has passed validation); the typed [`Request`] both
//! transports decode into; the views and JSON logic (projection, diff) that render a user;
//! the domain events; and the one error type with its mapping to the contract's codes.
//!
//! No I/O lives here: this crate compiles without a database, a broker or an HTTP server.

pub mod call;
pub mod error;
pub mod events;
pub mod json;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod operations;
pub mod quote;
pub mod request;
pub mod trace;
pub mod views;

mod billing;
mod email;
mod money;
mod preferences;
mod privacy;
mod scalars;
mod timestamp;
mod user;

pub use billing::{BillingInfo, BillingStats, Currency, PaymentMethod, TaxId};
pub use email::Email;
pub use money::Amount;
pub use preferences::{
    DownloadSettings, GameSettings, Genre, LanguageTag, MaxConcurrentDownloads, Notifications,
    Preferences, Theme, TimeZone,
};
pub use privacy::{PrivacySettings, ProfileVisibility};
pub use scalars::{
    AvatarUrl, BoundedText, CorrelationId, Metadata, PasswordHash, PaymentId, UserId, UserName,
};
pub use timestamp::Timestamp;
pub use user::{EditableUser, NewUser, User};

/// Why a value was refused; becomes one `details` entry of a `VALIDATION_FAILED` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// A string newtype that validates on construction and (de)serialises as a plain string.
macro_rules! string_newtype {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = $crate::Invalid;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

pub use crate::call::{CallContext, Caller, Data, Reply, ReplyStatus};
pub use crate::error::{CoreError, ErrorCode, FieldError};
pub use crate::request::{Method, ParamForm, Request};
