//! users.getBillingInfo, updateBillingInfo, recordPayment, get/updatePreferences,
//! get/updatePrivacySettings.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, send};

const USERS: &str = "/api/internal/users";

/// Creates a user and returns its id.
async fn new_user(app: &TestApp, email: &str) -> String {
    app.create_user("Ivan Petrov", email).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts a VALIDATION_FAILED error whose first detail names `field` (or a path inside it,
/// such as `paymentMethods[0]` or `gameSettings.turbo`).
#[track_caller]
fn assert_invalid(status: StatusCode, err: &Value, field: &str, what: &Value) {
    assert_error(status, err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let got = err["details"][0]["field"].as_str().unwrap_or_default();
    let inside = got
        .strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
    assert!(inside, "{what} → expected field {field}, got {err}");
}

/// The outbox rows of `event_type` for `user`, oldest first, as their payloads.
async fn outbox_events(app: &TestApp, user: &str, event_type: &str) -> Vec<Value> {
    let mut db = app.db().await;
    sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE user_id = $1::uuid AND event_type = $2 ORDER BY id",
    )
    .bind(user)
    .bind(event_type)
    .fetch_all(&mut db)
    .await
    .unwrap()
}

fn seed_billing() -> Value {
    json!({
        "billingAddress": "Москва, ул. Примерная, 123",
        "paymentMethods": ["card", "qiwi", "yandex_money"],
        "currency": "RUB",
        "taxId": "123456789012"
    })
}

fn default_preferences() -> Value {
    json!({
        "language": "ru",
        "timezone": "Europe/Moscow",
        "theme": "auto",
        "notifications": {"email": true, "push": true, "sms": false},
        "gameSettings": {"autoDownload": false, "cloudSave": true,
                         "achievementNotifications": true, "preferredGenres": []},
        "downloadSettings": {"maxConcurrentDownloads": 3, "downloadPath": null, "autoUpdate": true}
    })
}

// ---------------------------------------------------------------------------------------
// billing-info

#[tokio::test]
async fn billing_info_starts_null_with_zero_stats() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "bill@example.com").await;
    let (status, body) = app.get(&format!("{USERS}/{id}/billing-info")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "userId": id,
            "name": "Ivan Petrov",
            "email": "bill@example.com",
            "billingInfo": null,
            "billingStats": {"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0}
        })
    );

    let missing = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("{USERS}/{missing}/billing-info")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    let (status, err) = app
        .patch(&format!("{USERS}/{missing}/billing-info"), seed_billing())
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

#[tokio::test]
async fn billing_info_patch_merges_and_null_clears() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "merge@example.com").await;
    let path = format!("{USERS}/{id}/billing-info");

    let (status, body) = app.patch(&path, seed_billing()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], id.as_str());
    assert_eq!(body["email"], "merge@example.com");
    assert_eq!(body["billingInfo"], seed_billing());
    assert_eq!(
        body["billingStats"],
        json!({"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0})
    );
    assert_eq!(app.get(&path).await.1, body, "the answer is what is stored");

    // A partial patch keeps every other field.
    let (status, body) = app
        .patch(&path, json!({"billingAddress": "Казань, ул. Баумана, 1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = seed_billing();
    expected["billingAddress"] = json!("Казань, ул. Баумана, 1");
    assert_eq!(body["billingInfo"], expected);

    // null clears an optional field; the rest stays.
    let (status, body) = app.patch(&path, json!({"taxId": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    expected["taxId"] = Value::Null;
    assert_eq!(body["billingInfo"], expected);
    assert_eq!(app.get(&path).await.1, body);

    // Repeated methods are kept once, in the order given.
    let (status, body) = app
        .patch(&path, json!({"paymentMethods": ["sbp", "mir", "sbp"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["billingInfo"]["paymentMethods"], json!(["sbp", "mir"]));
    assert_eq!(
        body["billingInfo"]["billingAddress"],
        "Казань, ул. Баумана, 1"
    );
}

#[tokio::test]
async fn first_billing_patch_fills_defaults() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "first@example.com").await;
    let path = format!("{USERS}/{id}/billing-info");

    let (status, body) = app.patch(&path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["billingInfo"],
        Value::Null,
        "an empty patch creates nothing"
    );

    let (status, body) = app.patch(&path, json!({"taxId": "1234567890"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["billingInfo"],
        json!({"billingAddress": null, "paymentMethods": [], "currency": "RUB", "taxId": "1234567890"})
    );
}

#[tokio::test]
async fn billing_info_rejects_bad_values_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "badbill@example.com").await;
    let path = format!("{USERS}/{id}/billing-info");
    let (status, before) = app.patch(&path, seed_billing()).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let events_before = outbox_events(&app, &id, "USER_UPDATED").await.len();

    for (bad, field) in [
        (json!({"paymentMethods": ["paypal"]}), "paymentMethods"),
        (
            json!({"paymentMethods": ["card", "paypal"]}),
            "paymentMethods",
        ),
        (json!({"paymentMethods": "card"}), "paymentMethods"),
        (json!({"currency": "rub"}), "currency"),
        (json!({"currency": "XYZ"}), "currency"),
        (json!({"taxId": "12345"}), "taxId"),
        (json!({"taxId": "12345678901a"}), "taxId"),
        (json!({"taxId": 1234567890}), "taxId"),
        (json!({"billingAddress": "x".repeat(501)}), "billingAddress"),
        (json!({"iban": "DE00"}), "iban"),
        (json!({"billingAddress": "Ok street", "bank": "X"}), "bank"),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    assert_eq!(
        app.get(&path).await.1,
        before,
        "rejected patches change nothing"
    );
    assert_eq!(
        outbox_events(&app, &id, "USER_UPDATED").await.len(),
        events_before,
        "rejected patches emit nothing"
    );
}

// ---------------------------------------------------------------------------------------
// billing-stats (payments)

#[tokio::test]
async fn first_payment_is_201_with_totals() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "pay@example.com").await;
    let (status, body) = app
        .post(
            &format!("{USERS}/{id}/billing-stats"),
            json!({"paymentId": "pay-0001", "amount": "1499.50", "currency": "RUB",
                   "paidAt": "2024-05-01T12:00:00.000Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["userId"], id.as_str());
    assert_eq!(
        body["billingStats"],
        json!({"lastPaymentAt": "2024-05-01T12:00:00.000Z", "totalSpent": "1499.50", "paymentsCount": 1})
    );
    let (_, read) = app.get(&format!("{USERS}/{id}/billing-info")).await;
    assert_eq!(read, body, "the totals are stored");

    // An older payment adds to the totals but does not move lastPaymentAt back.
    let (status, body) = app
        .post(
            &format!("{USERS}/{id}/billing-stats"),
            json!({"paymentId": "pay-0000", "amount": "0.50", "currency": "RUB",
                   "paidAt": "2024-01-01T00:00:00.000Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["billingStats"],
        json!({"lastPaymentAt": "2024-05-01T12:00:00.000Z", "totalSpent": "1500.00", "paymentsCount": 2})
    );
}

#[tokio::test]
async fn payment_amounts_add_exactly() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "cents@example.com").await;
    let path = format!("{USERS}/{id}/billing-stats");
    let mut last = Value::Null;
    for n in 1..=3 {
        let (status, body) = app
            .post(
                &path,
                json!({"paymentId": format!("tenth-{n}"), "amount": "0.10", "currency": "RUB",
                       "paidAt": "2024-06-01T10:00:00.000Z"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        last = body;
    }
    assert_eq!(last["billingStats"]["totalSpent"], "0.30", "{last}");
    assert_eq!(last["billingStats"]["paymentsCount"], 3);

    // A JSON number is read as the decimal the caller wrote.
    let other = new_user(&app, "number@example.com").await;
    let (status, body) = app
        .post(
            &format!("{USERS}/{other}/billing-stats"),
            json!({"paymentId": "num-1", "amount": 199.99, "currency": "RUB",
                   "paidAt": "2024-06-01T10:00:00.000Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["billingStats"]["totalSpent"], "199.99");
    let (status, body) = app
        .post(
            &format!("{USERS}/{other}/billing-stats"),
            json!({"paymentId": "num-2", "amount": 0.1, "currency": "RUB",
                   "paidAt": "2024-06-01T10:00:00.000Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["billingStats"]["totalSpent"], "200.09");
    assert_eq!(body["billingStats"]["paymentsCount"], 2);
}

#[tokio::test]
async fn payment_replay_is_idempotent() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "replay@example.com").await;
    let path = format!("{USERS}/{id}/billing-stats");
    let payment = json!({"paymentId": "replay-1", "amount": "250.00", "currency": "RUB",
                         "paidAt": "2024-03-01T09:30:00.000Z"});
    let (status, first) = app.post(&path, payment.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");

    let (status, again) = app.post(&path, payment.clone()).await;
    assert_eq!(status, StatusCode::OK, "a replay is 200: {again}");
    assert_eq!(again, first, "a replay answers with the unchanged totals");

    // Same id, another amount or currency: another payment under a used id, a conflict.
    for (field, value) in [("amount", "999.00"), ("currency", "USD")] {
        let mut changed = payment.clone();
        changed[field] = json!(value);
        let (status, err) = app.post(&path, changed).await;
        assert_error(status, &err, StatusCode::CONFLICT, "CONFLICT");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }

    let (_, read) = app.get(&format!("{USERS}/{id}/billing-info")).await;
    assert_eq!(
        read["billingStats"],
        json!({"lastPaymentAt": "2024-03-01T09:30:00.000Z", "totalSpent": "250.00", "paymentsCount": 1})
    );
    let rows = app.count("SELECT count(*) FROM payments").await;
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn concurrent_replays_count_once() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "race@example.com").await;
    let path = format!("{USERS}/{id}/billing-stats");
    for round in 1..=5 {
        let payment = json!({"paymentId": format!("race-{round}"), "amount": "10.00",
                             "currency": "RUB", "paidAt": "2024-03-01T09:30:00.000Z"});
        let (a, b) = tokio::join!(
            app.post(&path, payment.clone()),
            app.post(&path, payment.clone())
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CREATED],
            "round {round}: {} / {}",
            a.1,
            b.1
        );
        assert_eq!(
            a.1["billingStats"], b.1["billingStats"],
            "round {round}: both answer the same totals"
        );
        assert_eq!(a.1["billingStats"]["paymentsCount"], round);
    }
    let (_, read) = app.get(&format!("{USERS}/{id}/billing-info")).await;
    assert_eq!(read["billingStats"]["totalSpent"], "50.00");
    assert_eq!(read["billingStats"]["paymentsCount"], 5);
}

#[tokio::test]
async fn payment_id_of_another_user_is_a_conflict() {
    let app = TestApp::spawn().await;
    let owner = new_user(&app, "owner@example.com").await;
    let other = new_user(&app, "other@example.com").await;
    let payment = json!({"paymentId": "shared-1", "amount": "15.00", "currency": "RUB",
                         "paidAt": "2024-03-01T09:30:00.000Z"});
    let (status, body) = app
        .post(&format!("{USERS}/{owner}/billing-stats"), payment.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, err) = app
        .post(&format!("{USERS}/{other}/billing-stats"), payment)
        .await;
    assert_error(status, &err, StatusCode::CONFLICT, "CONFLICT");
    let (_, read) = app.get(&format!("{USERS}/{other}/billing-info")).await;
    assert_eq!(
        read["billingStats"],
        json!({"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0})
    );
    let (_, read) = app.get(&format!("{USERS}/{owner}/billing-info")).await;
    assert_eq!(read["billingStats"]["totalSpent"], "15.00");
}

#[tokio::test]
async fn bad_payments_are_rejected_and_change_nothing() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "badpay@example.com").await;
    let path = format!("{USERS}/{id}/billing-stats");
    let base = json!({"paymentId": "bad-1", "amount": "1.00", "currency": "RUB",
                      "paidAt": "2024-03-01T09:30:00.000Z"});
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    for (bad, field) in [
        (with("amount", json!(-5)), "amount"),
        (with("amount", json!("-5")), "amount"),
        (with("amount", json!(0)), "amount"),
        (with("amount", json!("0.00")), "amount"),
        (with("amount", json!("1.234")), "amount"),
        (with("amount", json!(1.234)), "amount"),
        (with("amount", json!("abc")), "amount"),
        (with("amount", json!(true)), "amount"),
        (without("amount"), "amount"),
        (without("paymentId"), "paymentId"),
        (with("paymentId", json!("")), "paymentId"),
        (with("paymentId", json!("has space")), "paymentId"),
        (with("currency", json!("rub")), "currency"),
        (with("paidAt", json!("yesterday")), "paidAt"),
        (with("note", json!("x")), "note"),
    ] {
        let (status, err) = app.post(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    let (_, read) = app.get(&format!("{USERS}/{id}/billing-info")).await;
    assert_eq!(
        read["billingStats"],
        json!({"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0})
    );
    let rows = app.count("SELECT count(*) FROM payments").await;
    assert_eq!(rows, 0, "no payment was recorded");

    // The payment ids of rejected requests stay free.
    let (status, body) = app.post(&path, base).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let missing = uuid::Uuid::new_v4();
    let (status, err) = app
        .post(
            &format!("{USERS}/{missing}/billing-stats"),
            json!({"paymentId": "ghost-1", "amount": "1.00", "currency": "RUB",
                   "paidAt": "2024-03-01T09:30:00.000Z"}),
        )
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------
// preferences

#[tokio::test]
async fn preferences_read_with_every_default() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "prefs@example.com").await;
    let (status, body) = app.get(&format!("{USERS}/{id}/preferences")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, default_preferences());
    let missing = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("{USERS}/{missing}/preferences")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

#[tokio::test]
async fn preferences_patch_deep_merges_and_emits_the_diff() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "merge-prefs@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let patch = json!({"language": "en", "gameSettings": {"autoDownload": true}});

    let (status, body) = send(
        app.req(Method::PATCH, &path)
            .header("x-correlation-id", "req-456")
            .json(&patch),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = default_preferences();
    expected["language"] = json!("en");
    expected["gameSettings"]["autoDownload"] = json!(true);
    assert_eq!(body, expected, "siblings such as cloudSave are kept");
    assert_eq!(
        app.get(&path).await.1,
        expected,
        "the answer is what is stored"
    );

    let events = outbox_events(&app, &id, "PREFERENCES_CHANGED").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        event["data"],
        json!({"changed": ["gameSettings.autoDownload", "language"],
               "previous": {"gameSettings": {"autoDownload": false}, "language": "ru"},
               "current": {"gameSettings": {"autoDownload": true}, "language": "en"}})
    );
    assert_eq!(event["type"], "PREFERENCES_CHANGED");
    assert_eq!(event["userId"], id.as_str());
    assert_eq!(event["correlationId"], "req-456");

    // The same values again change nothing and emit nothing.
    let (status, body) = app.patch(&path, patch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, expected);
    let (status, body) = app
        .patch(
            &path,
            json!({"theme": "auto", "notifications": {"sms": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, expected);
    assert_eq!(
        outbox_events(&app, &id, "PREFERENCES_CHANGED").await.len(),
        1,
        "a no-op patch adds no event"
    );
}

#[tokio::test]
async fn preferences_null_resets_to_the_default() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "reset@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let (status, body) = app
        .patch(
            &path,
            json!({"theme": "dark", "timezone": "Asia/Tokyo",
                   "downloadSettings": {"maxConcurrentDownloads": 5, "downloadPath": "/games"},
                   "gameSettings": {"preferredGenres": ["rpg", "strategy"], "cloudSave": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["theme"], "dark");
    assert_eq!(body["downloadSettings"]["downloadPath"], "/games");
    assert_eq!(
        body["gameSettings"]["preferredGenres"],
        json!(["rpg", "strategy"])
    );

    let (status, body) = app
        .patch(
            &path,
            json!({"theme": null,
                   "downloadSettings": {"maxConcurrentDownloads": null, "downloadPath": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["theme"], "auto");
    assert_eq!(body["timezone"], "Asia/Tokyo", "untouched");
    assert_eq!(
        body["downloadSettings"],
        json!({"maxConcurrentDownloads": 3, "downloadPath": null, "autoUpdate": true})
    );
    assert_eq!(body["gameSettings"]["cloudSave"], false, "untouched");

    // null on a whole sub-object resets all of it.
    let (status, body) = app.patch(&path, json!({"gameSettings": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["gameSettings"], default_preferences()["gameSettings"]);
    assert_eq!(app.get(&path).await.1, body);
}

#[tokio::test]
async fn preferences_reject_bad_values_and_change_nothing() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "badprefs@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let genres: Vec<String> = (0..21).map(|i| format!("genre{i}")).collect();
    for (bad, field) in [
        (json!({"theme": "neon"}), "theme"),
        (
            json!({"downloadSettings": {"maxConcurrentDownloads": 11}}),
            "downloadSettings.maxConcurrentDownloads",
        ),
        (
            json!({"downloadSettings": {"maxConcurrentDownloads": 0}}),
            "downloadSettings.maxConcurrentDownloads",
        ),
        (json!({"timezone": "Mars/Base"}), "timezone"),
        (json!({"language": "not a tag"}), "language"),
        (
            json!({"gameSettings": {"preferredGenres": genres}}),
            "gameSettings.preferredGenres",
        ),
        (
            json!({"gameSettings": {"preferredGenres": ["x".repeat(33)]}}),
            "gameSettings.preferredGenres",
        ),
        (
            json!({"gameSettings": {"turbo": true}}),
            "gameSettings.turbo",
        ),
        (json!({"fontSize": 12}), "fontSize"),
        (
            json!({"notifications": {"email": "yes"}}),
            "notifications.email",
        ),
        (json!({"gameSettings": 5}), "gameSettings"),
        (json!({"theme": 1}), "theme"),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    // A patch with a valid part and an invalid part is rejected as a whole.
    let (status, err) = app
        .patch(&path, json!({"language": "en", "theme": "neon"}))
        .await;
    assert_invalid(status, &err, "theme", &json!("partly valid"));

    assert_eq!(app.get(&path).await.1, default_preferences());
    assert!(
        outbox_events(&app, &id, "PREFERENCES_CHANGED")
            .await
            .is_empty(),
        "a rejected patch adds no event"
    );
}

// ---------------------------------------------------------------------------------------
// privacy-settings

#[tokio::test]
async fn privacy_settings_defaults_patch_and_validation() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "privacy@example.com").await;
    let path = format!("{USERS}/{id}/privacy-settings");
    let defaults = json!({"profileVisibility": "public", "showOnlineStatus": true,
                          "showGameActivity": true, "allowFriendRequests": true,
                          "showAchievements": true});
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, defaults);

    let (status, body) = app
        .patch(&path, json!({"profileVisibility": "friends"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = defaults.clone();
    expected["profileVisibility"] = json!("friends");
    assert_eq!(body, expected, "the full settings come back");

    let (status, body) = app.patch(&path, json!({"showOnlineStatus": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    expected["showOnlineStatus"] = json!(false);
    assert_eq!(body, expected, "other fields are kept");
    assert_eq!(app.get(&path).await.1, expected);

    for (bad, field) in [
        (
            json!({"profileVisibility": "everyone"}),
            "profileVisibility",
        ),
        (json!({"profileVisibility": "Friends"}), "profileVisibility"),
        (json!({"showAchievements": "no"}), "showAchievements"),
        (json!({"showEmail": false}), "showEmail"),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    assert_eq!(
        app.get(&path).await.1,
        expected,
        "rejected patches change nothing"
    );

    let missing = uuid::Uuid::new_v4();
    let (status, err) = app
        .get(&format!("{USERS}/{missing}/privacy-settings"))
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}
