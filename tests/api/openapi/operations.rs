//! Every documented operation driven through its successes and the common errors; each answer
//! must be documented and validate against the document, with the documented headers.

use std::collections::BTreeSet;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Checker;
use crate::helpers::{CATALOG_KEY, HASH, TestApp};

const USERS: &str = "/api/internal/users";

#[tokio::test]
async fn every_answer_matches_the_document() {
    // game-catalog is limited to a few requests, for a real 429.
    let app = TestApp::spawn_with(&[
        (
            "RATE_LIMITS",
            "auth-service=100000/60,game-catalog=3/60,default=100/60",
        ),
        ("AUDIT_READERS", "auth-service"),
    ])
    .await;
    let mut c = Checker::new(&app).await;
    c.refuses_what_it_should();
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    let user_t = "/api/internal/users/{id}";
    let sub = |s: &str| format!("/api/internal/users/{{id}}/{s}");

    // Create: 201, 409, 400 (with details).
    let body = json!({"name": "Doc User", "email": "doc@example.com", "password": HASH});
    let created = c
        .call(app.req(post.clone(), USERS).json(&body), &post, USERS)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body.as_ref().expect("a user")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let a = c
        .call(app.req(post.clone(), USERS).json(&body), &post, USERS)
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let bad = json!({"name": "", "email": "nope", "password": "x"});
    let a = c
        .call(app.req(post.clone(), USERS).json(&bad), &post, USERS)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let user = format!("{USERS}/{id}");

    // Reads of one user: full, projected, 400 and 404.
    for path in [
        user.clone(),
        format!("{user}?fields=name,preferences.theme,billingInfo.currency"),
    ] {
        let a = c.call(app.req(get.clone(), &path), &get, user_t).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let a = c
        .call(app.req(get.clone(), &format!("{USERS}/nope")), &get, user_t)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let missing = format!("{USERS}/0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b");
    let a = c.call(app.req(get.clone(), &missing), &get, user_t).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // By e-mail, with and without credentials; 403 for a caller that may not read them.
    let email_t = "/api/internal/users/email/{email}";
    for q in ["", "?includeCredentials=true"] {
        let path = format!("{USERS}/email/doc@example.com{q}");
        let a = c.call(app.req(get.clone(), &path), &get, email_t).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let creds = format!("{USERS}/email/doc@example.com?includeCredentials=true");
    let a = c
        .call(
            app.client
                .get(app.url(&creds))
                .header("x-api-key", CATALOG_KEY),
            &get,
            email_t,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // The rest of the single-user operations.
    let reads = [
        (format!("{user}/exists"), sub("exists")),
        (format!("{user}/profile"), sub("profile")),
        (
            format!("{user}/profile?includePreferences=true&includePrivacySettings=1"),
            sub("profile"),
        ),
        (format!("{user}/profile?publicOnly=true"), sub("profile")),
        (format!("{user}/billing-info"), sub("billing-info")),
        (format!("{user}/preferences"), sub("preferences")),
        (format!("{user}/privacy-settings"), sub("privacy-settings")),
    ];
    for (path, template) in &reads {
        let a = c.call(app.req(get.clone(), path), &get, template).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let writes = [
        (
            format!("{user}/last-login"),
            sub("last-login"),
            json!({"ipAddress": "2001:db8::1"}),
        ),
        (
            user.clone(),
            user_t.to_owned(),
            json!({"name": "Doc", "avatarUrl": "https://cdn.example.com/a.png", "metadata": {"k": [1, 2.5, null]}}),
        ),
        (
            format!("{user}/billing-info"),
            sub("billing-info"),
            json!({"billingAddress": "Москва", "paymentMethods": ["card", "sbp"], "taxId": "123456789012"}),
        ),
        (
            format!("{user}/preferences"),
            sub("preferences"),
            json!({"theme": "dark", "downloadSettings": {"maxConcurrentDownloads": 5}, "gameSettings": {"preferredGenres": ["rpg"]}}),
        ),
        (
            format!("{user}/privacy-settings"),
            sub("privacy-settings"),
            json!({"profileVisibility": "friends", "showOnlineStatus": null}),
        ),
    ];
    for (path, template, body) in &writes {
        let a = c
            .call(app.req(patch.clone(), path).json(body), &patch, template)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let a = c
        .call(
            app.req(patch.clone(), &format!("{user}/preferences"))
                .json(&json!({"theme": "neon"})),
            &patch,
            &sub("preferences"),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Payments: 201, 200 for the same again, 409 for the same id with another amount.
    let pay = |amount: &str| json!({"paymentId": "doc-pay-1", "amount": amount, "currency": "RUB"});
    let stats = format!("{user}/billing-stats");
    for (amount, want) in [
        ("199.99", StatusCode::CREATED),
        ("199.99", StatusCode::OK),
        ("5.00", StatusCode::CONFLICT),
    ] {
        let a = c
            .call(
                app.req(post.clone(), &stats).json(&pay(amount)),
                &post,
                &sub("billing-stats"),
            )
            .await;
        assert_eq!(a.status, want, "{amount}");
    }

    // 422: one Idempotency-Key for two different requests.
    for (name, want) in [
        ("Key One", StatusCode::OK),
        ("Key Two", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let a = c
            .call(
                app.req(patch.clone(), &user)
                    .header("Idempotency-Key", "doc-key-1")
                    .json(&json!({"name": name})),
                &patch,
                user_t,
            )
            .await;
        assert_eq!(a.status, want, "{name}");
    }

    // Batches.
    let lookup = "/api/batch/users/lookup";
    let unknown = "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b";
    for path in [
        format!("{lookup}?ids={id},{unknown}"),
        format!("{lookup}?ids={id}&fields=name,privacySettings"),
    ] {
        let a = c.call(app.req(get.clone(), &path), &get, lookup).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    for body in [
        json!({"ids": [id, unknown]}),
        json!({"ids": format!("{id},{unknown}"), "fields": ["email"]}),
    ] {
        let a = c
            .call(app.req(post.clone(), lookup).json(&body), &post, lookup)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{body}");
    }
    let profiles = "/api/internal/users/batch/profiles";
    for body in [
        json!({"userIds": [id, unknown], "includePreferences": true, "includePrivacySettings": "true"}),
        json!({"userIds": [id], "fields": "name,billingStats.totalSpent"}),
    ] {
        let a = c
            .call(app.req(post.clone(), profiles).json(&body), &post, profiles)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{body}");
    }
    let create = "/api/batch/users/create";
    let users = json!({"users": [
        {"name": "Batch", "email": "batch@example.com", "password": HASH},
        {"name": "Dup", "email": "doc@example.com", "password": HASH},
        {"name": "", "email": "x", "password": "y"},
        7
    ]});
    let a = c
        .call(app.req(post.clone(), create).json(&users), &post, create)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let statuses: Vec<&str> = a.body.as_ref().expect("results")["results"]
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["created", "conflict", "invalid", "invalid"]);

    // 413: a body over 1 MiB.
    let big = vec![b' '; 1024 * 1024 + 1];
    let a = c
        .call(
            app.req(post.clone(), create)
                .header(CONTENT_TYPE, "application/json")
                .body(big),
            &post,
            create,
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);

    // 401 without credentials; 429 (with Retry-After) past a caller's limit.
    let a = c.call(app.client.get(app.url(&user)), &get, user_t).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let mut limited = None;
    for _ in 0..6 {
        let a = c
            .call(
                app.client
                    .get(app.url(&user))
                    .header("x-api-key", CATALOG_KEY),
                &get,
                user_t,
            )
            .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(a);
            break;
        }
    }
    let limited = limited.expect("game-catalog is limited to 3 requests a minute");
    assert!(limited.headers.contains_key("retry-after"));

    // Delete: 204 without a body, then 404.
    let a = c
        .call(app.req(delete.clone(), &user), &delete, user_t)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = c.call(app.req(get.clone(), &user), &get, user_t).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Listing: a page with the deleted user (its `deletedAt` set), then a bad token.
    for q in [
        "?deleted=both&limit=1",
        "?isActive=true&createdAfter=2024-01-01T00:00:00Z",
    ] {
        let path = format!("{USERS}{q}");
        let a = c.call(app.req(get.clone(), &path), &get, USERS).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let search_t = "/api/internal/users/search";
    for q in ["?q=doc&purpose=friends&limit=5", "?email=doc@example.com"] {
        let path = format!("{search_t}{q}");
        let a = c.call(app.req(get.clone(), &path), &get, search_t).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let path = format!("{search_t}?q=a&email=doc@example.com");
    let a = c.call(app.req(get.clone(), &path), &get, search_t).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let path = format!("{USERS}?pageToken=nope");
    let a = c.call(app.req(get.clone(), &path), &get, USERS).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Restore: the user back as it was (200), then answered as it is.
    let restore_t = sub("restore");
    for _ in 0..2 {
        let path = format!("{user}/restore");
        let a = c
            .call(app.req(post.clone(), &path), &post, &restore_t)
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }

    // History (auth-service is an audit reader here), a page of one, then a bad token.
    let history_t = sub("history");
    for q in ["?limit=1", "?pageToken=nope"] {
        let path = format!("{user}/history{q}");
        let a = c.call(app.req(get.clone(), &path), &get, &history_t).await;
        let expected = match q {
            "?limit=1" => StatusCode::OK,
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(a.status, expected, "{path}");
    }

    // Export (auth-service reads credentials, so it may), then erase: 204 twice; the listing
    // shows the erased user as its id and dates.
    let export_t = sub("export");
    let path = format!("{user}/export");
    let a = c.call(app.req(get.clone(), &path), &get, &export_t).await;
    assert_eq!(a.status, StatusCode::OK);
    let erase_t = sub("erase");
    for _ in 0..2 {
        let path = format!("{user}/erase");
        let a = c.call(app.req(post.clone(), &path), &post, &erase_t).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }
    let path = format!("{USERS}?deleted=deleted");
    let a = c.call(app.req(get.clone(), &path), &get, USERS).await;
    assert_eq!(a.status, StatusCode::OK, "{path}");

    // The unauthenticated paths.
    for path in ["/health", "/health/ready", "/health/integrations"] {
        let a = c.call(app.client.get(app.url(path)), &get, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics.headers()[CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain")),
        "documented as text/plain"
    );

    // Every documented operation was answered with a documented success at least once.
    let documented: BTreeSet<(String, String)> = c.doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(m, _)| (m.to_uppercase(), path.clone()))
        })
        .filter(|(_, path)| path != "/metrics")
        .collect();
    let succeeded: BTreeSet<(String, String)> = c
        .seen
        .iter()
        .filter(|(_, _, status)| (200..300).contains(status))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(
        documented.difference(&succeeded).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations never answered successfully"
    );
    for status in [400, 401, 403, 404, 409, 413, 422, 429] {
        assert!(
            c.seen.iter().any(|(_, _, s)| *s == status),
            "no {status} validated"
        );
    }
}
