//! Slow, idle and surplus clients against the REST edge (issue 20): heads and bodies that
//! never finish are cut at their timeouts while other callers are served, an idle
//! connection closes, connections past the cap wait for a free one, and cleartext HTTP/2 is
//! not spoken. Raw TCP, since an HTTP client would not misbehave on purpose.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{AUTH_KEY, TestApp, eventually};

/// The timeouts these tests shorten, so that a cut is seen within seconds.
const SHORT: &str = "1000";
/// Room for a loaded machine between a timeout and the close the test sees.
const MARGIN: Duration = Duration::from_secs(5);

async fn connect(addr: SocketAddr, sends: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(sends).await.expect("sends");
    stream
}

/// Reads until the server closes the connection (end of stream or reset) and returns what
/// it sent first; `Err` with that if it is still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(0) | Err(_)) => return Ok(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the server sent before closing; fails the test if it is still open after `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> String {
    until_closed(stream, within)
        .await
        .unwrap_or_else(|sent| panic!("still open after {within:?}, having sent {sent:?}"))
}

/// Reads one response (head and `content-length` body) and returns its status line.
async fn response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("reads");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            return text.lines().next().unwrap_or_default().to_owned();
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn half_sent_heads_and_bodies_are_cut_while_others_are_served() {
    let app = TestApp::spawn_with(&[
        ("HTTP_HEADER_TIMEOUT_MS", SHORT),
        ("HTTP_BODY_TIMEOUT_MS", SHORT),
    ])
    .await;
    let timeout = Duration::from_millis(1000);
    let started = Instant::now();
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        heads.push(connect(app.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await);
        let post = format!(
            "POST /api/internal/users HTTP/1.1\r\nHost: x\r\nx-api-key: {AUTH_KEY}\r\n\
             content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"name\": \"slow"
        );
        bodies.push(connect(app.addr, post.as_bytes()).await);
    }
    // Meanwhile, callers that send whole requests are answered as usual.
    for i in 0..5 {
        let (status, _) = app.get("/health").await;
        assert_eq!(status, StatusCode::OK);
        app.create_user("Quick", &format!("quick{i}@example.com"))
            .await;
    }
    let (heads, bodies) = tokio::join!(
        futures::future::join_all(heads.iter_mut().map(|c| until_closed(c, timeout + MARGIN))),
        futures::future::join_all(bodies.iter_mut().map(|c| until_closed(c, timeout + MARGIN))),
    );
    let open = |all: &[Result<String, String>]| all.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        (open(&heads), open(&bodies)),
        (0, 0),
        "(half heads, half bodies) still open after {:?}",
        timeout + MARGIN
    );
    for sent in heads.into_iter().flatten() {
        assert_eq!(sent, "", "a cut head gets no answer");
    }
    for sent in bodies.into_iter().flatten() {
        assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
        assert!(sent.contains("\"code\":\"REQUEST_TIMEOUT\""), "{sent}");
        assert!(
            sent.to_ascii_lowercase().contains("connection: close"),
            "{sent}"
        );
    }
    assert!(started.elapsed() >= timeout, "not cut before the timeout");
    assert_eq!(app.count("SELECT count(*) FROM users").await, 5);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(&[("HTTP_IDLE_TIMEOUT_MS", SHORT)]).await;
    let mut conn = connect(app.addr, HEALTH).await;
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    // Kept alive: a second request on it is served.
    conn.write_all(HEALTH).await.expect("sends");
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    let idle_from = Instant::now();
    // The header timeout is 10 s: a close within the margin is the idle timeout's.
    assert_eq!(closed(&mut conn, MARGIN).await, "");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(&[("HTTP_MAX_CONNECTIONS", "3")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(app.addr, HEALTH).await;
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
        held.push(conn);
    }
    let mut waiting = connect(app.addr, HEALTH).await;
    let early = tokio::time::timeout(Duration::from_secs(1), response(&mut waiting)).await;
    assert!(early.is_err(), "a fourth connection was served: {early:?}");
    drop(held.pop());
    let answer = tokio::time::timeout(MARGIN, response(&mut waiting)).await;
    assert_eq!(
        answer.expect("served once a slot is free"),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn cleartext_http2_is_refused() {
    let app = TestApp::spawn().await;
    // The client preface of HTTP/2 with prior knowledge, then an empty SETTINGS frame.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut conn = connect(app.addr, &preface).await;
    assert_eq!(closed(&mut conn, MARGIN).await, "", "no HTTP/2 frame back");
    // HTTP/1.1 on a new connection is served as ever.
    let mut conn = connect(app.addr, HEALTH).await;
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_sent_connections() {
    let app = TestApp::spawn_with(&[("HTTP_HEADER_TIMEOUT_MS", SHORT)]).await;
    let mut idle = connect(app.addr, HEALTH).await;
    assert_eq!(response(&mut idle).await, "HTTP/1.1 200 OK");
    let mut half = connect(app.addr, b"GET /health HTTP/1.1\r\n").await;
    app.begin_stop();
    // The idle one at once (its idle timeout is 60 s); the half-sent one at its timeout.
    assert_eq!(closed(&mut idle, MARGIN).await, "");
    assert_eq!(closed(&mut half, MARGIN).await, "");
    eventually(MARGIN, || async { app.has_stopped().then_some(()) }).await;
}
