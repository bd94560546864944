//! Who may call the REST edge (keys, secret, allow-list, local open mode), the unauthenticated
//! health endpoints, the short keys production refuses and invented caller names.

use reqwest::{Method, StatusCode};
use serde_json::json;
use user_service::config::Config;

use crate::helpers::{AUTH_KEY, CATALOG_KEY, HASH, SECRET, TestApp, assert_error, send};

mod failures;
mod requests;

const USERS: &str = "/api/internal/users";

/// A path every authenticated caller gets 200 from, whatever the database holds.
fn exists_path() -> String {
    format!("{USERS}/{}/exists", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn api_key_in_x_api_key_or_bearer() {
    let app = TestApp::spawn().await;
    app.create_user("Key", "key@example.com").await;
    let app = app.with_key(None);
    let creds = format!("{USERS}/email/key@example.com?includeCredentials=true");

    let (status, body) = send(
        app.req(Method::GET, &exists_path())
            .header("x-api-key", AUTH_KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"exists": false}));

    for bearer in [format!("Bearer {AUTH_KEY}"), format!("bearer  {AUTH_KEY} ")] {
        let (status, body) = send(
            app.req(Method::GET, &exists_path())
                .header("authorization", &bearer),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{bearer}: {body}");
    }

    // The key names the caller: auth-service reads credentials, game-catalog does not.
    let (status, body) = send(
        app.req(Method::GET, &creds)
            .header("authorization", format!("Bearer {AUTH_KEY}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["passwordHash"], HASH);
    let (status, err) = send(
        app.req(Method::GET, &creds)
            .header("authorization", format!("Bearer {CATALOG_KEY}")),
    )
    .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = send(
        app.req(Method::GET, &exists_path())
            .header("x-api-key", CATALOG_KEY),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_401() {
    let app = TestApp::spawn().await.with_key(None);
    let path = exists_path();

    let (status, err) = send(app.req(Method::GET, &path)).await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    let (status, err) = send(
        app.req(Method::GET, &path)
            .header("x-api-key", "wrong-key-0123456789"),
    )
    .await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    for header in [
        "Bearer wrong-key-0123456789",
        "Bearer ",
        &format!("Basic {AUTH_KEY}"),
    ] {
        let (status, err) = send(app.req(Method::GET, &path).header("authorization", header)).await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }

    // A key is not a secret and a secret is not a key.
    let (status, err) = send(app.req(Method::GET, &path).header("x-api-key", SECRET)).await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (status, err) = send(
        app.req(Method::GET, &path)
            .header("x-internal-service", AUTH_KEY),
    )
    .await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    // Writes are refused too, and change nothing.
    let (status, err) = send(
        app.req(Method::POST, USERS)
            .json(&json!({"name": "Anon", "email": "anon@example.com", "password": HASH})),
    )
    .await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let count = app.count("SELECT count(*) FROM users").await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn internal_secret_with_or_without_service_name() {
    let app = TestApp::spawn().await;
    app.create_user("Sec", "sec@example.com").await;
    let app = app.with_key(None);
    let path = exists_path();

    let (status, body) = send(
        app.req(Method::GET, &path)
            .header("x-internal-service", SECRET)
            .header("x-service-name", "library-service"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        app.req(Method::GET, &path)
            .header("x-internal-service", SECRET),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Caller `internal` is not a credential reader.
    let (status, err) = send(
        app.req(
            Method::GET,
            &format!("{USERS}/email/sec@example.com?includeCredentials=true"),
        )
        .header("x-internal-service", SECRET),
    )
    .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    // Nor is a declared credential reader's name claimed with the secret: only its own key
    // proves who it is.
    let (status, err) = send(
        app.req(
            Method::GET,
            &format!("{USERS}/email/sec@example.com?includeCredentials=true"),
        )
        .header("x-internal-service", SECRET)
        .header("x-service-name", "auth-service"),
    )
    .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");

    for wrong in ["wrong-secret-0123456789", &SECRET[..SECRET.len() - 1]] {
        let (status, err) = send(
            app.req(Method::GET, &path)
                .header("x-internal-service", wrong)
                .header("x-service-name", "library-service"),
        )
        .await;
        assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn allow_list_excluding_the_caller_is_403() {
    let app = TestApp::spawn_with(&[("INTERNAL_ALLOWED_IPS", "10.0.0.0/8")]).await;
    let (status, err) = app.get(&exists_path()).await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, err) = send(
        app.req(Method::GET, &exists_path())
            .header("x-internal-service", SECRET),
    )
    .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    // The allow-list is in addition to credentials: none is still 401.
    let anon = app.with_key(None);
    let (status, err) = anon.get(&exists_path()).await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // Health is not behind it.
    assert_eq!(anon.get("/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn allow_list_including_the_caller_is_200() {
    let app = TestApp::spawn_with(&[("INTERNAL_ALLOWED_IPS", "127.0.0.0/8,::1")]).await;
    let (status, body) = app.get(&exists_path()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let anon = app.with_key(None);
    let (status, err) = anon.get(&exists_path()).await;
    assert_error(status, &err, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}

#[tokio::test]
async fn allow_list_over_ipv6() {
    if !crate::helpers::ipv6_loopback() {
        return;
    }
    let app = TestApp::spawn_with(&[
        ("HTTP_ADDR", "[::1]:0"),
        ("INTERNAL_ALLOWED_IPS", "::1/128"),
    ])
    .await;
    assert!(app.addr.is_ipv6(), "{}", app.addr);
    let (status, body) = app.get(&exists_path()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop(app);

    let app = TestApp::spawn_with(&[
        ("HTTP_ADDR", "[::1]:0"),
        ("INTERNAL_ALLOWED_IPS", "10.0.0.0/8"),
    ])
    .await;
    let (status, err) = app.get(&exists_path()).await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    drop(app);

    // An IPv4 entry does not admit the IPv6 loopback.
    let app = TestApp::spawn_with(&[
        ("HTTP_ADDR", "[::1]:0"),
        ("INTERNAL_ALLOWED_IPS", "127.0.0.1"),
    ])
    .await;
    let (status, err) = app.get(&exists_path()).await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[tokio::test]
async fn local_open_mode_serves_loopback_as_local() {
    let app = TestApp::spawn_with(&[("INTERNAL_API_KEYS", ""), ("INTERNAL_SERVICE_SECRET", "")])
        .await
        .with_key(None);
    let created = app.create_user("Open", "open@example.com").await;
    let id = created["id"].as_str().unwrap();
    let (status, body) = app.get(&format!("{USERS}/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "open@example.com");

    // `local` is not a credential reader.
    let (status, err) = app
        .get(&format!(
            "{USERS}/email/open@example.com?includeCredentials=true"
        ))
        .await;
    assert_error(status, &err, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = app.get(&format!("{USERS}/email/open@example.com")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("passwordHash").is_none(), "{body}");
}

#[tokio::test]
async fn health_needs_no_credentials() {
    let app = TestApp::spawn().await.with_key(None);
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["status"].is_string(), "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    assert!(body["uptimeSeconds"].is_u64(), "{body}");
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn production_refuses_short_keys() {
    let config = |vars: &[(&str, &str)]| {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    };
    let err = config(&[
        ("APP_ENV", "production"),
        ("INTERNAL_API_KEYS", "svc=short-key"),
    ])
    .expect_err("a key under 32 characters is refused in production");
    assert_eq!(err.var, "INTERNAL_API_KEYS");
    let err = config(&[("APP_ENV", "production")]).expect_err("production needs credentials");
    assert_eq!(err.var, "INTERNAL_API_KEYS");
    let err = config(&[
        ("APP_ENV", "production"),
        ("INTERNAL_API_KEYS", "svc=0123456789abcdef0123456789abcdef"),
        ("INTERNAL_SERVICE_SECRET", "short"),
    ])
    .expect_err("a short secret is refused in production");
    assert_eq!(err.var, "INTERNAL_SERVICE_SECRET");

    let err = config(&[
        ("APP_ENV", "production"),
        ("INTERNAL_API_KEYS", "svc=0123456789abcdef0123456789abcdef"),
    ])
    .expect_err("production needs billing keys");
    assert_eq!(err.var, "BILLING_KEYS");
    assert!(
        config(&[
            ("APP_ENV", "production"),
            ("INTERNAL_API_KEYS", "svc=0123456789abcdef0123456789abcdef"),
            (
                "BILLING_KEYS",
                "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
            ),
        ])
        .is_ok()
    );
    assert!(
        config(&[
            ("APP_ENV", "development"),
            ("INTERNAL_API_KEYS", "svc=short-key")
        ])
        .is_ok(),
        "development accepts short keys"
    );
}

/// Caller names are a closed set: invented `x-service-name` values neither add metric series
/// nor get an allowance of their own.
#[tokio::test]
async fn invented_service_names_are_one_caller() {
    let app = TestApp::spawn_with(&[("RATE_LIMITS", "default=50/60")])
        .await
        .with_key(None);
    let path = exists_path();
    let mut limited = 0;
    for i in 0..120 {
        let (status, _) = send(
            app.req(Method::GET, &path)
                .header("x-internal-service", SECRET)
                .header("x-service-name", format!("invented-{i}")),
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert_eq!(limited, 70, "120 requests, one allowance of 50");
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("invented-"),
        "no series per invented name"
    );
    assert!(metrics.contains("service=\"internal\""));
}
