//! users.getBillingInfo and updateBillingInfo (null until written, merges, defaults, bad
//! values); recordPayment is in `payments`, the preferences and privacy settings in `settings`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

mod payments;
mod settings;

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
