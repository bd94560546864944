//! Failed authentications are limited per source without ever refusing a valid credential,
//! on both transports; `/health/integrations` details and the names the shared secret may
//! claim.

use lapin::BasicProperties;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::exists_path;
use crate::amqp::{Raw, key, table};
use crate::helpers::{AUTH_KEY, CATALOG_KEY, SECRET, TestApp, assert_error, send};

/// Different wrong keys up to the allowance (5) are 401 at once; a stale key repeated stays
/// 401; the 6th different one, and every failure after it, still gets its 401 but only after
/// the tarpit's wait; a flood of them past the tarpit's slots gets 429 with `Retry-After`;
/// and the right key and the secret from the same address are served throughout.
#[tokio::test]
async fn rest_failures_past_the_limit_are_slowed_and_valid_credentials_are_served() {
    let app = TestApp::spawn_with(&[("AUTH_FAILURES_PER_ADDRESS", "5/60")])
        .await
        .with_key(None);
    let path = exists_path();
    let with_key = |k: String| app.req(Method::GET, &path).header("x-api-key", k);
    for n in 0..5 {
        let (status, err) = send(with_key(format!("guess-{n}-0123456789"))).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    for _ in 0..10 {
        let (status, err) = send(with_key("guess-0-0123456789".into())).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    for failing in [
        with_key("guess-5-0123456789".into()),
        with_key("guess-0-0123456789".into()),
        app.req(Method::GET, &path),
    ] {
        let started = std::time::Instant::now();
        let (status, err) = send(failing).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
        assert!(slowed(&err), "{err}");
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(200),
            "a failure over the limit waits in the tarpit"
        );
    }

    // A flood of failures over the limit fills the tarpit: the rest are 429 at once.
    let flood = crate::helpers::eventually(std::time::Duration::from_secs(20), || async {
        let wave = (0..150).map(|n| with_key(format!("flood-{n}-0123456789")).send());
        let answers = futures::future::join_all(wave).await;
        answers
            .into_iter()
            .flatten()
            .find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
    })
    .await;
    let retry: u64 = flood.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let err: Value = flood.json().await.unwrap();
    assert_eq!(err["code"], "RATE_LIMITED", "{err}");

    // Valid credentials from the same address are served as usual, every time.
    for _ in 0..3 {
        let (status, body) = send(with_key(AUTH_KEY.into())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = send(
            app.req(Method::GET, &path)
                .header("authorization", format!("Bearer {CATALOG_KEY}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = send(
            app.req(Method::GET, &path)
                .header("x-internal-service", SECRET),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Whether a refusal waited in the tarpit: its source was over the limit.
fn slowed(err: &Value) -> bool {
    err["message"]
        .as_str()
        .is_some_and(|m| m.contains("answered slowly"))
}

async fn rpc_status(raw: &mut Raw, app: &TestApp, props: BasicProperties) -> Value {
    let exists = json!({"method": "users.exists", "params": {"id": uuid::Uuid::new_v4()}});
    raw.call(&app.rpc_queue, exists.to_string().as_bytes(), props)
        .await
        .1
}

fn with(headers: &[(&str, &str)]) -> BasicProperties {
    BasicProperties::default().with_headers(table(headers))
}

/// Over RPC the source is the broker user a message names in `user_id` (the broker checks
/// it), else every unnamed publisher together: past the allowance, failures get 429 with
/// `retryAfter`, valid keys are answered, and another source keeps its own allowance.
#[tokio::test]
async fn rpc_failures_past_the_limit_get_429_and_valid_credentials_are_served() {
    let app = TestApp::spawn_with(&[("AUTH_FAILURES_PER_ADDRESS", "3/60")]).await;
    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    for n in 0..3 {
        let reply = rpc_status(&mut raw, &app, with(&key(&format!("guess-{n}")))).await;
        assert_eq!(reply["error"]["code"], "UNAUTHENTICATED", "{reply}");
    }
    let stale = rpc_status(&mut raw, &app, with(&key("guess-0"))).await;
    assert_eq!(stale["error"]["code"], "UNAUTHENTICATED", "{stale}");
    for failing in [with(&key("guess-3")), with(&[])] {
        let reply = rpc_status(&mut raw, &app, failing).await;
        assert_eq!(
            (reply["status"].clone(), reply["error"]["code"].clone()),
            (json!(429), json!("RATE_LIMITED")),
            "{reply}"
        );
        assert!(
            reply["error"]["retryAfter"]
                .as_u64()
                .is_some_and(|s| (1..=60).contains(&s))
        );
    }
    for valid in [key(AUTH_KEY), key(CATALOG_KEY)] {
        let reply = rpc_status(&mut raw, &app, with(&valid)).await;
        assert_eq!(reply["status"], 200, "{reply}");
    }
    let secret = [("x-internal-service", SECRET)];
    assert_eq!(
        rpc_status(&mut raw, &app, with(&secret)).await["status"],
        200
    );

    // A message that names its broker user is counted apart from the unnamed ones.
    let guest = || with(&key("guess-4")).with_user_id("guest".into());
    let reply = rpc_status(&mut raw, &app, guest()).await;
    assert_eq!(reply["error"]["code"], "UNAUTHENTICATED", "{reply}");
}

/// A dual-stack listener sees IPv4 callers as IPv4-mapped IPv6: they are counted as the IPv4
/// address, apart from the IPv6 loopback's /64 (the /64 grouping itself is a unit test).
#[tokio::test]
async fn ipv4_mapped_and_ipv6_callers_are_separate_sources() {
    if !crate::helpers::ipv6_loopback() {
        return;
    }
    let app = TestApp::spawn_with(&[
        ("HTTP_ADDR", "[::]:0"),
        ("AUTH_FAILURES_PER_ADDRESS", "2/60"),
    ])
    .await
    .with_key(None);
    let port = app.addr.port();
    let path = exists_path();
    let get = |host: &str, k: &str| {
        app.client
            .get(format!("http://{host}:{port}{path}"))
            .header("x-api-key", k.to_owned())
    };
    for k in ["g0", "g1"] {
        let (status, err) = send(get("127.0.0.1", k)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!slowed(&err), "{err}");
    }
    let (status, err) = send(get("127.0.0.1", "g2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(slowed(&err), "127.0.0.1 is over its allowance: {err}");
    assert_eq!(send(get("127.0.0.1", AUTH_KEY)).await.0, StatusCode::OK);
    // ::1 is another source: its own allowance.
    let (status, err) = send(get("[::1]", "g2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!slowed(&err), "::1 is not over it: {err}");
    assert_eq!(send(get("[::1]", AUTH_KEY)).await.0, StatusCode::OK);
}

/// What each part of `/health/integrations` holds, as a map of its field names.
fn fields(body: &Value) -> Vec<(String, Vec<String>)> {
    let parts = body.as_object().expect("an object");
    parts
        .iter()
        .map(|(name, part)| {
            let keys = part.as_object().map(|o| o.keys().cloned().collect());
            (name.clone(), keys.unwrap_or_default())
        })
        .collect()
}

/// Unauthenticated readers get each part's status only; callers with valid credentials, and
/// addresses in `INTERNAL_ALLOWED_IPS`, get the callers, allow-list and figures.
#[tokio::test]
async fn integrations_show_status_only_to_unauthenticated_readers() {
    let app = TestApp::spawn().await;
    let anon = app.client.get(app.url("/health/integrations"));
    let (status, body) = send(anon).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status_only: Vec<(String, Vec<String>)> = [
        ("status", vec![]),
        ("database", vec!["status"]),
        ("redis", vec!["status"]),
        ("internalApis", vec!["status"]),
        ("eventPublishing", vec!["status"]),
        ("cachePerformance", vec!["status"]),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_owned(), k.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(fields(&body), status_only, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("auth-service") && !text.contains("apiKeyCallers"),
        "{text}"
    );
    for part in ["database", "redis", "internalApis", "cachePerformance"] {
        assert!(body[part]["status"].is_string(), "{part}: {body}");
    }
    let wrong = app
        .client
        .get(app.url("/health/integrations"))
        .header("x-api-key", "wrong-key-0123456789");
    assert_eq!(fields(&send(wrong).await.1), status_only);

    let (_, body) = app.get("/health/integrations").await;
    assert_eq!(
        body["internalApis"]["apiKeyCallers"],
        json!(["auth-service", "game-catalog"])
    );
    assert_eq!(body["internalApis"]["internalSecret"], true);
    assert!(
        body["cachePerformance"]["hitRate"].is_null()
            || body["cachePerformance"]["hitRate"].is_number()
    );
    assert!(body["cachePerformance"]["misses"].is_u64(), "{body}");
    assert!(body["database"]["latencyMs"].is_number(), "{body}");
    let (_, body) = send(
        app.client
            .get(app.url("/health/integrations"))
            .header("x-internal-service", SECRET),
    )
    .await;
    assert_eq!(body["internalApis"]["ipAllowList"], json!([]), "{body}");

    let allowed = TestApp::spawn_with(&[("INTERNAL_ALLOWED_IPS", "127.0.0.0/8")]).await;
    let (_, body) = send(allowed.client.get(allowed.url("/health/integrations"))).await;
    assert_eq!(
        body["internalApis"]["ipAllowList"],
        json!(["127.0.0.0/8"]),
        "{body}"
    );
}

/// The secret cannot claim a name that has its own key (403, on both transports); a
/// declared name without a key it can.
#[tokio::test]
async fn a_key_holders_name_claimed_with_the_secret_is_refused() {
    let app = TestApp::spawn().await.with_key(None);
    let path = exists_path();
    let claim = |name: &str| {
        app.req(Method::GET, &path)
            .header("x-internal-service", SECRET)
            .header("x-service-name", name.to_owned())
    };
    for holder in ["game-catalog", "auth-service"] {
        let (status, err) = send(claim(holder)).await;
        assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains("has its own API key"), "{err}");
    }
    let (status, body) = send(claim("payment-service")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.until_broker(true).await;
    let mut raw = Raw::connect().await;
    let secret = |name| with(&[("x-internal-service", SECRET), ("x-service-name", name)]);
    let reply = rpc_status(&mut raw, &app, secret("game-catalog")).await;
    assert_eq!(
        (reply["status"].clone(), reply["error"]["code"].clone()),
        (json!(403), json!("FORBIDDEN")),
        "{reply}"
    );
    assert_eq!(
        rpc_status(&mut raw, &app, secret("payment-service")).await["status"],
        200
    );
}
