//! What a call can fail with, and the reading of a reply envelope.

use std::time::Duration;

use serde_json::Value;
use user_domain::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// user-service answered with an error (contract section 4): its status and code.
    #[error("{status} {}: {message}", .code.as_str())]
    Service {
        status: u16,
        code: ErrorCode,
        message: String,
        /// `VALIDATION_FAILED` lists `[{field, message}]` here; otherwise usually null.
        details: Value,
    },
    /// No reply within the configured timeout (after the retries, where there were any).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the circuit breaker is open; not calling user-service")]
    CircuitOpen,
    #[error("RabbitMQ: {0}")]
    Transport(String),
    #[error("unreadable reply: {0}")]
    Protocol(String),
    /// Rejected before sending: the argument cannot be a valid request.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Worth another attempt, and a failure for the breaker: the service or the way to it
    /// may recover.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Service { status, .. } => *status >= 500,
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::CircuitOpen | Self::Protocol(_) | Self::InvalidArgument(_) => false,
        }
    }

    /// The status a service error carries, for callers that branch on it.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The contract's code of a service error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Service { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The user does not exist (or was deleted).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::UserNotFound)
    }
}

impl From<lapin::Error> for ClientError {
    fn from(e: lapin::Error) -> Self {
        Self::Transport(e.to_string())
    }
}

impl From<crate::broker::AmqpError> for ClientError {
    fn from(e: crate::broker::AmqpError) -> Self {
        Self::Transport(e.to_string())
    }
}

/// The code named in a reply; a name this client does not know (a newer service) is read
/// from the status, the way an HTTP client reads an unknown status by its class.
fn error_code(name: Option<&str>, status: u16) -> ErrorCode {
    if let Some(code) = ErrorCode::ALL
        .into_iter()
        .find(|c| Some(c.as_str()) == name)
    {
        return code;
    }
    match status {
        400 => ErrorCode::ValidationFailed,
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        422 => ErrorCode::IdempotencyKeyReused,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// `{status, data}` → data; `{status, error}` → [`ClientError::Service`].
pub fn decode_reply(bytes: &[u8]) -> Result<Value, ClientError> {
    let reply: Value =
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = reply["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| ClientError::Protocol(format!("no status in {reply}")))?;
    if status < 400 {
        return Ok(reply.get("data").cloned().unwrap_or(Value::Null));
    }
    let error = &reply["error"];
    Err(ClientError::Service {
        status,
        code: error_code(error["code"].as_str(), status),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
        details: error.get("details").cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_decode_into_data_or_typed_errors() {
        assert_eq!(
            decode_reply(br#"{"status": 200, "data": {"exists": true}}"#).unwrap(),
            json!({"exists": true})
        );
        let err = decode_reply(
            br#"{"status": 404, "error": {"code": "USER_NOT_FOUND", "message": "gone"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(404), Some(ErrorCode::UserNotFound))
        );
        assert!(err.is_not_found() && !err.is_transient());
        assert_eq!(err.to_string(), "404 USER_NOT_FOUND: gone");
        let unavailable =
            decode_reply(br#"{"status": 503, "error": {"code": "UNAVAILABLE", "message": ""}}"#);
        assert!(unavailable.unwrap_err().is_transient());
        let newer = decode_reply(br#"{"status": 409, "error": {"code": "SOMETHING_NEW"}}"#);
        assert_eq!(newer.unwrap_err().code(), Some(ErrorCode::Conflict));
        assert!(matches!(
            decode_reply(b"nope"),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_reply(br#"{"status": 70000}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn every_code_reads_back_as_itself() {
        for code in ErrorCode::ALL {
            assert_eq!(error_code(Some(code.as_str()), 500), code);
            assert_eq!(error_code(None, code.status()).status(), code.status());
        }
    }
}
