use super::*;
use user_domain::{Email, UserId, UserName};

fn user() -> User {
    User {
        id: UserId::generate(),
        email: Email::parse("ann@example.com").unwrap(),
        name: UserName::parse("Ann").unwrap(),
        avatar_url: None,
        is_active: true,
        last_login_at: None,
        last_login_ip: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        preferences: Default::default(),
        privacy_settings: Default::default(),
        billing_info: None,
        billing_stats: Default::default(),
        metadata: Default::default(),
    }
}

fn corr(s: &str) -> Origin {
    Origin {
        correlation_id: user_domain::CorrelationId::parse(s).unwrap(),
        actor: "game-catalog".to_owned(),
        trace: Default::default(),
    }
}

fn patch(v: Value) -> Patch {
    v.as_object().unwrap().clone()
}

#[test]
fn preferences_diff_matches_the_seed() {
    let e = preferences(
        &user(),
        &patch(json!({"language": "en", "gameSettings": {"autoDownload": true}})),
        &corr("req-456"),
    )
    .unwrap();
    assert_eq!(e.events.len(), 1);
    let ev = &e.events[0];
    assert_eq!(ev.event_type, EventType::PreferencesChanged);
    assert_eq!(ev.correlation_id.as_str(), "req-456");
    assert_eq!((ev.actor.as_str(), ev.schema_version), ("game-catalog", 1));
    assert_eq!(
        ev.data,
        json!({"changed": ["gameSettings.autoDownload", "language"],
               "previous": {"gameSettings": {"autoDownload": false}, "language": "ru"},
               "current": {"gameSettings": {"autoDownload": true}, "language": "en"}})
    );
    assert!(
        e.user.preferences.game_settings.cloud_save,
        "untouched siblings keep their values"
    );
}

#[test]
fn same_values_are_a_no_op() {
    let e = preferences(
        &user(),
        &patch(json!({"language": "ru", "theme": "auto"})),
        &corr("c"),
    )
    .unwrap();
    assert!(e.events.is_empty());
    assert!(
        billing(&user(), &Patch::new(), &corr("c"))
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn null_resets_to_the_default() {
    let mut u = user();
    u.preferences.theme = user_domain::Theme::Dark;
    let e = preferences(&u, &patch(json!({"theme": null})), &corr("c")).unwrap();
    assert_eq!(e.user.preferences.theme, user_domain::Theme::Auto);
}

#[test]
fn merge_result_is_validated() {
    for bad in [
        json!({"theme": "neon"}),
        json!({"extra": 1}),
        json!({"gameSettings": 5}),
        // A list is not an object, though serde reads a struct from one.
        json!({"notifications": []}),
        json!({"notifications": [false, false, false]}),
        json!({"gameSettings": {"autoDownload": true}, "downloadSettings": [3, null, true]}),
    ] {
        assert!(
            preferences(&user(), &patch(bad.clone()), &corr("c")).is_err(),
            "{bad}"
        );
    }
    assert!(
        update(&user(), &patch(json!({"name": null})), &corr("c")).is_err(),
        "name is required"
    );
    assert!(
        update(
            &user(),
            &patch(json!({"password": "$2b$10$abcdefghijklmnop"})),
            &corr("c")
        )
        .is_err()
    );
}

#[test]
fn update_splits_account_and_profile_events() {
    let e = update(
        &user(),
        &patch(json!({"name": "Bob", "avatarUrl": "https://x.io/a.png"})),
        &corr("c"),
    )
    .unwrap();
    let types: Vec<_> = e.events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        vec![EventType::UserUpdated, EventType::ProfileUpdated]
    );
    assert_eq!(e.events[0].data["changed"], json!(["name"]));
    assert_eq!(e.events[1].data["changed"], json!(["avatarUrl"]));
    assert_eq!(e.events[1].data["previous"], json!({"avatarUrl": null}));
}

#[test]
fn metadata_merges_deeply() {
    let mut u = user();
    u.metadata = serde_json::from_value(json!({"a": {"x": 1, "y": 2}, "b": 1})).unwrap();
    let e = update(
        &u,
        &patch(json!({"metadata": {"a": {"x": null, "z": 3}}})),
        &corr("c"),
    )
    .unwrap();
    assert_eq!(
        to_json(&e.user.metadata),
        json!({"a": {"y": 2, "z": 3}, "b": 1})
    );
    assert_eq!(
        e.events[0].data["changed"],
        json!(["metadata.a.x", "metadata.a.z"])
    );
}

#[test]
fn first_billing_patch_creates_the_object() {
    let e = billing(&user(), &patch(json!({"taxId": "1234567890"})), &corr("c")).unwrap();
    let info = e.user.billing_info.clone().unwrap();
    assert_eq!(info.currency.as_ref(), "RUB");
    let data = &e.events[0].data;
    assert_eq!(
        data["changed"],
        json!([
            "billingInfo.currency",
            "billingInfo.paymentMethods",
            "billingInfo.taxId"
        ])
    );
    assert_eq!(
        (&data["previous"], &data["current"]),
        (&json!({}), &json!({}))
    );
    assert!(!data.to_string().contains("1234567890"), "no billing value");
    let again = billing(
        &e.user,
        &patch(json!({"taxId": "123456789012"})),
        &corr("c"),
    )
    .unwrap();
    assert_eq!(
        again.events[0].data["changed"],
        json!(["billingInfo.taxId"])
    );
    assert!(!again.events[0].data.to_string().contains("123456789012"));
}

#[test]
fn payments_add_exactly() {
    let p: Payment = serde_json::from_value(json!({"paymentId": "p1", "amount": "0.10"})).unwrap();
    let mut u = user();
    for _ in 0..3 {
        u = payment(&u, &p, &corr("c")).unwrap().user;
    }
    assert_eq!(u.billing_stats.total_spent.to_string(), "0.30");
    assert_eq!(u.billing_stats.payments_count, 3);
}

#[test]
fn a_null_for_an_unknown_field_is_refused() {
    let prefs = user_domain::Preferences::default();
    let patch = |v: Value| v.as_object().cloned().unwrap_or_default();
    let err = merged(&prefs, &patch(json!({"nope": null}))).unwrap_err();
    assert_eq!(err.details()[0].field, "nope");
    let err = merged(&prefs, &patch(json!({"notifications": {"fax": null}}))).unwrap_err();
    assert_eq!(err.details()[0].field, "notifications.fax");
    assert!(merged(&prefs, &patch(json!({"theme": null}))).is_ok());
    let editable = EditableUser::from(&user());
    assert!(
        merged(&editable, &patch(json!({"metadata": {"absent": null}}))).is_ok(),
        "metadata is free-form"
    );
}
