//! A REST request's params, from its path segments, query string and JSON body, each
//! bounded: the body by [`MAX_BODY_BYTES`] and a deadline.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use user_domain::CoreError;
use user_domain::quote::{QUOTE_CHARS, cut};
use warp::http::HeaderMap;

/// Request bodies above this size get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Splits the path into percent-decoded segments, dropping empty ones (`//`, trailing `/`).
pub(super) fn decode_segments(path: &str) -> Result<Vec<String>, CoreError> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| CoreError::invalid("path", "is not valid UTF-8"))
        })
        .collect()
}

/// Query pairs join the params as strings; a repeated name becomes a list.
pub(super) fn add_query(params: &mut Map<String, Value>, query: &str) {
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = Value::String(v.into_owned());
        match params.get_mut(k.as_ref()) {
            Some(Value::Array(items)) => items.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.take(), v]),
            None => {
                params.insert(k.into_owned(), v);
            }
        }
    }
}

/// A JSON object body joins the params. It may not repeat a name the path or query set.
/// No body at all adds nothing; anything else must be a JSON object (blanks are not).
pub(super) fn add_body(params: &mut Map<String, Value>, body: Bytes) -> Result<(), CoreError> {
    if body.is_empty() {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| CoreError::invalid("body", format!("is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(CoreError::invalid("body", "must be a JSON object"));
    };
    for (k, v) in fields {
        if params.contains_key(&k) {
            return Err(CoreError::invalid(
                cut(&k, QUOTE_CHARS),
                "unknown field in the body (it belongs in the path or query)",
            ));
        }
        params.insert(k, v);
    }
    Ok(())
}

/// Reads the body up to [`MAX_BODY_BYTES`]; a declared or actual larger body is a 413, one
/// that has not all arrived within `timeout` a 408.
pub(super) async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    timeout: Duration,
) -> Result<Bytes, CoreError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let declared = headers
        .get(warp::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = std::pin::pin!(body);
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(body).await;
        return Err(CoreError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| CoreError::invalid("body", format!("could not be read: {e}")))?;
            if buf.len() + chunk.remaining() > MAX_BODY_BYTES {
                return Err(CoreError::PayloadTooLarge(MAX_BODY_BYTES));
            }
            buf.put(chunk);
        }
        Ok(buf.freeze())
    };
    // Its timer starts only if the body is not already in hand.
    let read = tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(CoreError::RequestTimeout(timeout)));
    if let Err(CoreError::PayloadTooLarge(_)) = read {
        drain(body).await;
    }
    read
}

/// Reads and discards what the client is still sending, within bounds, so that the 413
/// reaches it: closing on unread bytes would reset the connection under the client's write.
async fn drain<S, B>(mut body: std::pin::Pin<&mut S>)
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    const MAX_DRAIN: usize = 16 * MAX_BODY_BYTES;
    let drained = async {
        let mut total = 0;
        while let Some(Ok(chunk)) = body.next().await {
            total += chunk.remaining();
            if total > MAX_DRAIN {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
}
