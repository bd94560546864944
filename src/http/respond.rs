//! Encoding the core's answer as HTTP, and the error body of contract section 4.

use bytes::Bytes;
use serde_json::{Value, json};
use user_domain::CorrelationId;
use user_domain::{CoreError, Reply, ReplyStatus};
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The caller's correlation id when it follows the rule, else a new one.
pub fn correlation_id(headers: &HeaderMap) -> CorrelationId {
    let sent = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    CorrelationId::or_generate(sent)
}

pub fn render(result: Result<Reply, CoreError>, correlation_id: &CorrelationId) -> Response {
    let retry_after = match &result {
        Err(CoreError::RateLimited { retry_after_secs }) => Some(*retry_after_secs),
        _ => None,
    };
    let (status, body) = match result {
        Ok(reply) => {
            let body = (reply.status != ReplyStatus::NoContent).then(|| reply.data.into_bytes());
            (reply.status.code(), body)
        }
        Err(e) => (
            e.code().status(),
            serde_json::to_vec(&error_body(&e, correlation_id.as_str()))
                .ok()
                .map(Bytes::from),
        ),
    };
    let mut response = match body {
        Some(bytes) => {
            let mut r = Response::new(bytes.into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        None => Response::new(Default::default()),
    };
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Adds the `x-correlation-id` header (to a response made outside [`render`]).
pub fn with_correlation_id(mut response: Response, correlation_id: &CorrelationId) -> Response {
    if let Ok(v) = HeaderValue::from_str(correlation_id.as_str()) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

/// `{statusCode, error, code, message, correlationId, details?}`; `Retry-After` is a header.
pub fn error_body(e: &CoreError, correlation_id: &str) -> Value {
    let code = e.code();
    let mut body = json!({"statusCode": code.status(), "error": code.reason()});
    if let (Value::Object(out), Value::Object(shared)) = (&mut body, e.body()) {
        out.extend(shared);
        out.insert(
            "correlationId".to_owned(),
            Value::String(correlation_id.to_owned()),
        );
    }
    body
}
