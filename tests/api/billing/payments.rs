//! users.recordPayment (POST billing-stats): totals that add exactly, replays that count once
//! (concurrent ones too), a payment id of another user, bad payments refused.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{USERS, assert_invalid, new_user};
use crate::helpers::{TestApp, assert_error};

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
