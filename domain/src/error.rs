//! The core's error type and its one mapping to the contract's codes and statuses.

use std::borrow::Cow;

use serde::Serialize;
use serde_path_to_error::Segment;

use crate::BillingInfo;
use crate::quote::{QUOTE_CHARS, cut, cut_quoted};

/// One `details` entry of a `VALIDATION_FAILED` error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// Longest `field` kept: a path of names, each already cut to [`QUOTE_CHARS`].
    pub const FIELD_CHARS: usize = 256;
    /// Longest `message` kept; the texts this service writes are shorter, so only one that
    /// quotes input too much is cut.
    pub const MESSAGE_CHARS: usize = 1024;

    /// Both texts are cut (see [`cut`]): a message quotes at most a prefix of the input.
    /// Control characters (U+0000 among them: an error body may be stored in PostgreSQL)
    /// become U+FFFD.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let bounded = |s: String, max: usize| match cut(&s, max) {
            Cow::Borrowed(_) => s,
            Cow::Owned(cut) => cut,
        };
        Self {
            field: bounded(field.into(), Self::FIELD_CHARS),
            message: bounded(message.into(), Self::MESSAGE_CHARS),
        }
    }
}

/// The contract's error codes (section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    Unauthenticated,
    Forbidden,
    UserNotFound,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    /// A `paymentId` already recorded with another amount, currency or user; a retry whose
    /// request key is still being processed.
    Conflict,
    /// A request key reused with different content (IETF Idempotency-Key draft).
    IdempotencyKeyReused,
    PayloadTooLarge,
    /// REST only: a request body that did not all arrive in time.
    RequestTimeout,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the contract's order.
    pub const ALL: [Self; 14] = [
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::UserNotFound,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::EmailTaken,
        Self::Conflict,
        Self::IdempotencyKeyReused,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn status(self) -> u16 {
        match self {
            Self::ValidationFailed => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::UserNotFound | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::EmailTaken | Self::Conflict => 409,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::UserNotFound => "USER_NOT_FOUND",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::Conflict => "CONFLICT",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The HTTP reason phrase, used as the `error` field of a REST error body.
    pub fn reason(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Payload Too Large",
            422 => "Unprocessable Entity",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }
}

/// Everything that can go wrong with a request, whichever transport carried it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    #[error("{message}")]
    Validation {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("user {0} not found")]
    UserNotFound(String),
    /// Answered `USER_NOT_FOUND`, saying why: the user cannot come back.
    #[error("user {0} was erased: its personal data is gone, and it cannot be restored")]
    UserErased(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("email {0} is already taken")]
    EmailTaken(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not all arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("rate limit exceeded, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The message is for logs only; callers see a generic text.
    #[error("internal error")]
    Internal(String),
}

impl CoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::UserNotFound(_) | Self::UserErased(_) => ErrorCode::UserNotFound,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::EmailTaken(_) => ErrorCode::EmailTaken,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid_all(vec![FieldError::new(field, message)])
    }

    pub fn invalid_all(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] if one.field.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", details.len()),
        };
        Self::Validation { message, details }
    }

    pub fn details(&self) -> &[FieldError] {
        match self {
            Self::Validation { details, .. } => details,
            _ => &[],
        }
    }

    /// `{code, message, details?, retryAfter?}`: the part of an error body every transport
    /// shares. `retryAfter` (seconds) repeats REST's `Retry-After` header for RPC callers.
    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({"code": self.code().as_str(), "message": self.to_string()});
        if !self.details().is_empty() {
            body["details"] = serde_json::json!(self.details());
        }
        if let Self::RateLimited { retry_after_secs } = self {
            body["retryAfter"] = serde_json::json!(retry_after_secs);
        }
        body
    }

    /// Turns a failed deserialisation into a validation error that names the offending field,
    /// as a dotted path under `prefix`. Names and values the message quotes are cut to
    /// [`QUOTE_CHARS`]; under a billing field (`taxId`, `billingAddress`) values are not
    /// quoted at all, whatever their JSON type.
    pub fn from_serde(err: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> Self {
        let message = err.inner().to_string();
        let mut path = String::new();
        let mut billing = false;
        for segment in err.path().iter() {
            match segment {
                Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    billing |= BillingInfo::SECRET_FIELDS.contains(&key.as_str());
                    path = join_path(&path, &cut(key, QUOTE_CHARS));
                }
                Segment::Unknown => path = join_path(&path, "?"),
            }
        }
        // A missing field is named in the message, not in the path.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            path = join_path(&path, &cut(name, QUOTE_CHARS));
        }
        let message = match message.strip_prefix("unknown field `") {
            Some(rest) => match rest.split_once("`, expected ") {
                Some((_, expected)) => format!("unknown field; allowed: {expected}"),
                None => "unknown field".to_owned(),
            },
            None => cut_quoted(&message, if billing { 0 } else { QUOTE_CHARS }),
        };
        Self::invalid(join_path(prefix, &path), message)
    }
}

pub(crate) fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Deserialises `value` as `T`, turning failure into a validation error under `prefix`.
/// As [`from_json`], from JSON text, without building a tree of values on the way (a stored
/// document read back).
pub fn from_raw<T: serde::de::DeserializeOwned>(json: &str, prefix: &str) -> Result<T, CoreError> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| CoreError::from_serde(e, prefix))
}

pub fn from_json<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, CoreError> {
    serde_path_to_error::deserialize(value).map_err(|e| CoreError::from_serde(e, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    fn field_of(v: serde_json::Value) -> String {
        from_json::<Outer>(v, "").unwrap_err().details()[0]
            .field
            .clone()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(json!({"inner": {"flag": true}})), "name");
        assert_eq!(
            field_of(json!({"name": "x", "inner": {"flag": 1}})),
            "inner.flag"
        );
        assert_eq!(
            field_of(json!({"name": "x", "inner": {"flag": true, "extra": 1}})),
            "inner.extra"
        );
        assert_eq!(
            field_of(json!({"name": 5, "inner": {"flag": true}})),
            "name"
        );
    }

    /// The length of everything an error says: what a reply, a dead letter or a log carries.
    fn said(e: &CoreError) -> usize {
        e.body().to_string().len()
    }

    #[test]
    fn error_texts_never_quote_unbounded_input() {
        let long = "n".repeat(200_000);
        let mut doc = json!({"name": "x", "inner": {"flag": true}});
        doc["inner"][long.as_str()] = json!(1);
        let e = from_json::<Outer>(doc, "").unwrap_err();
        let field = &e.details()[0].field;
        assert!(
            field.starts_with("inner.nnn") && field.ends_with('…'),
            "{field}"
        );
        assert_eq!(field.chars().count(), "inner.".len() + QUOTE_CHARS + 1);
        assert!(said(&e) < 400, "{}", e.body());

        let value = json!({"name": "x", "inner": {"flag": "v".repeat(200_000)}});
        let e = from_json::<Outer>(value, "").unwrap_err();
        assert!(said(&e) < 400, "{}", e.body());
        assert!(e.to_string().contains("…"), "{e}");

        let e = CoreError::invalid("f".repeat(10_000), "m".repeat(10_000));
        let d = &e.details()[0];
        assert_eq!(d.field.chars().count(), FieldError::FIELD_CHARS + 1);
        assert_eq!(d.message.chars().count(), FieldError::MESSAGE_CHARS + 1);
    }

    #[test]
    fn billing_values_of_any_type_are_never_quoted() {
        for bad in [
            json!({"taxId": 7707083893u64}),
            json!({"taxId": true}),
            json!({"taxId": 77070.83893}),
            json!({"billingAddress": 7707083893u64}),
            json!({"billingAddress": ["7707083893"]}),
            json!({"taxId": {"inn": "7707083893"}}),
        ] {
            let e = from_json::<BillingInfo>(bad.clone(), "").unwrap_err();
            let text = e.body().to_string();
            assert!(
                !text.contains("7707083893") && !text.contains("77070"),
                "{bad}: {text}"
            );
            assert_eq!(e.code(), ErrorCode::ValidationFailed);
        }
    }
}
