//! What the REST edge does with any request: correlation ids echoed or generated, bodies over
//! 1 MiB refused with 413 (declared, chunked or sent whole), JSON-object bodies, 404 and 405.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{USERS, exists_path};
use crate::helpers::{AUTH_KEY, HASH, TestApp, assert_error, send};

#[tokio::test]
async fn correlation_id_is_echoed_or_generated() {
    let app = TestApp::spawn().await;

    let resp = app
        .req(Method::GET, &exists_path())
        .header("x-correlation-id", "req-456")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-correlation-id"], "req-456");

    // On errors too, in the header and in the body.
    let missing = uuid::Uuid::new_v4();
    let resp = app
        .req(Method::GET, &format!("{USERS}/{missing}"))
        .header("x-correlation-id", "req-789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-correlation-id"], "req-789");
    let status = resp.status();
    let err: Value = resp.json().await.unwrap();
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    assert_eq!(err["correlationId"], "req-789");

    let resp = app
        .client
        .get(app.url(&exists_path()))
        .header("x-correlation-id", "req-unauth")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-correlation-id"], "req-unauth");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["correlationId"], "req-unauth");

    // Without one, a fresh id is generated, and the error body carries the same id.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = app
            .req(Method::GET, &format!("{USERS}/{missing}"))
            .send()
            .await
            .unwrap();
        let generated = resp.headers()["x-correlation-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!generated.trim().is_empty());
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["correlationId"], generated.as_str());
        seen.push(generated);
    }
    assert_ne!(seen[0], seen[1], "each request gets its own id");

    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    let generated = resp.headers()["x-correlation-id"].to_str().unwrap();
    assert!(!generated.is_empty());
}

/// A create body of `size` bytes: valid JSON with a large `metadata` blob.
fn big_body(size: usize) -> Vec<u8> {
    let head = r#"{"name":"Big","email":"big@example.com","password":""#;
    let mut body = format!("{head}{HASH}\",\"metadata\":{{\"blob\":\"").into_bytes();
    let tail = b"\"}}";
    body.resize(size - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

const MIB: usize = 1024 * 1024;

/// One HTTP/1.1 exchange over a plain socket: writes `head` and then `body` while reading
/// the answer, and returns the answer's head and its JSON body. The server may answer and
/// close before the whole body is written; write errors are expected then and ignored.
async fn raw_exchange(app: &TestApp, head: String, body: Vec<u8>) -> (String, Value) {
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The write half stays open until the answer is in: the server must not depend on the
    // client hanging up.
    let writer_task = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });
    let read = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while !response_complete(&got) {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    };
    // A guard against a hang, not a synchronisation: the answer is awaited, never slept for.
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    writer_task.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (head.to_owned(), body)
}

/// True once `raw` holds a whole HTTP response with a `content-length` body.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| raw.len() >= end + 4 + n)
}

fn request_head(app: &TestApp, correlation_id: &str, framing: &str) -> String {
    format!(
        "POST {USERS} HTTP/1.1\r\nhost: {}\r\nx-api-key: {AUTH_KEY}\r\n\
         x-correlation-id: {correlation_id}\r\ncontent-type: application/json\r\n\
         {framing}\r\n\r\n",
        app.addr
    )
}

#[track_caller]
fn assert_413(head: &str, err: &Value, correlation_id: &str) {
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-correlation-id: {correlation_id}")),
        "{head}"
    );
    assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        err,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    assert_eq!(err["correlationId"], correlation_id);
}

async fn user_count(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM users").await
}

/// A declared length over 1 MiB is refused from the headers alone, before any body byte.
#[tokio::test]
async fn declared_length_over_one_mib_is_413_before_the_body() {
    let app = TestApp::spawn().await;
    let head = request_head(&app, "declared-1", &format!("content-length: {}", MIB + 1));
    let (head, err) = raw_exchange(&app, head, Vec::new()).await;
    assert_413(&head, &err, "declared-1");
    assert_eq!(user_count(&app).await, 0);
}

/// reqwest here has no `stream` feature, so the chunked request is written by hand.
#[tokio::test]
async fn chunked_body_over_one_mib_is_413() {
    let app = TestApp::spawn().await;
    let mut body = Vec::new();
    for chunk in big_body(MIB + 64 * 1024).chunks(16 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = request_head(&app, "chunked-1", "transfer-encoding: chunked");
    let (head, err) = raw_exchange(&app, head, body).await;
    assert_413(&head, &err, "chunked-1");
    assert_eq!(user_count(&app).await, 0);
}

/// Exactly 1 MiB is read, and then judged on its content (the metadata is too large).
#[tokio::test]
async fn body_of_exactly_one_mib_is_read() {
    let app = TestApp::spawn().await;
    let body = big_body(MIB);
    serde_json::from_slice::<Value>(&body).expect("the body is valid JSON");
    let (status, err) = send(
        app.req(Method::POST, USERS)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(err["details"][0]["field"], "metadata", "{err}");
    assert_eq!(user_count(&app).await, 0);
}

/// An ordinary HTTP client sending an oversized body must receive the 413, every time.
///
/// Fails at the time of writing: the service answers 413 without reading the body and closes
/// the connection at once (no lingering close, RFC 9112 §9.6), so the unread body makes the
/// kernel reset the connection and the client often sees `BrokenPipe` while still writing
/// instead of the 413. Repeated so that the outcome does not depend on one lucky race.
#[tokio::test]
async fn oversized_body_413_reaches_an_ordinary_client() {
    let app = TestApp::spawn().await;
    for size in [MIB + 1, 4 * MIB] {
        for attempt in 1..=20 {
            let sent = app
                .req(Method::POST, USERS)
                .header("content-type", "application/json")
                .body(big_body(size))
                .send()
                .await;
            let resp = sent.unwrap_or_else(|e| {
                panic!("{size} bytes, attempt {attempt}: no 413 but a transport error: {e:?}")
            });
            let status = resp.status();
            let err: Value = resp.json().await.unwrap();
            assert_error(
                status,
                &err,
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
            );
        }
    }
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn body_must_be_a_json_object() {
    let app = TestApp::spawn().await;
    for body in [
        json!([{"name": "A", "email": "a@example.com", "password": HASH}]),
        json!("a string"),
        json!(42),
    ] {
        let (status, err) = app.post(USERS, body.clone()).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert_eq!(err["details"][0]["field"], "body", "{body} → {err}");
    }
    let id = app.create_user("Obj", "obj@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, err) = app
        .patch(
            &format!("{USERS}/{id}/preferences"),
            json!(["language", "en"]),
        )
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = TestApp::spawn().await;
    for path in ["/api/nope", "/api/internal/users/x/y/z", "/", "/healthz"] {
        let (status, err) = app.get(path).await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let id = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("{USERS}/{id}/nonexistent-sub")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "NOT_FOUND");

    let (status, err) = send(
        app.req(Method::PUT, &format!("{USERS}/{id}"))
            .json(&json!({"name": "Put"})),
    )
    .await;
    assert_error(
        status,
        &err,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let (status, err) = app.delete(&format!("{USERS}/{id}/preferences")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
    let (status, err) = app.get(&format!("{USERS}/{id}/billing-stats")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
}
