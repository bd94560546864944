use super::*;
use proptest::prelude::*;

const ID: &str = "0191e2a4-6b1c-7c3d-9e8f-0123456789ab";

fn event(corr: &str) -> Value {
    json!({"eventId": ID, "type": "USER_CREATED", "userId": ID,
           "timestamp": "2024-01-01T00:00:00.000Z", "correlationId": corr,
           "source": "user-service", "data": {"name": "Eve", "email": "eve@example.com"}})
}

fn refusal(key: &str, payload: &str) -> Refusal {
    encode(key, payload, EventFormat::Plain).expect_err("refused")
}

fn nested(depth: usize) -> Value {
    (1..depth).fold(json!({}), |inner, _| json!({ "a": inner }))
}

#[test]
fn a_good_event_keeps_its_bytes_and_properties() {
    let payload = event("req-456").to_string();
    let m = encode("user.created", &payload, EventFormat::Plain).unwrap();
    assert_eq!(m.routing_key.as_str(), "user.created");
    assert_eq!(m.body, payload.as_bytes(), "keys in order, compact");
    let p = &m.properties;
    assert_eq!(p.message_id().as_ref().map(ShortString::as_str), Some(ID));
    assert_eq!(
        p.kind().as_ref().map(ShortString::as_str),
        Some("USER_CREATED")
    );
    let corr = p.correlation_id().as_ref().map(ShortString::as_str);
    assert_eq!(corr, Some("req-456"));
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(p.timestamp(), &Some(1_704_067_200));

    let m = encode("user.created", &payload, EventFormat::Nestjs).unwrap();
    let body: Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(
        body,
        json!({"pattern": "user.created", "data": event("req-456")})
    );
}

#[test]
fn hostile_properties_are_refused() {
    let long = "c".repeat(1000);
    for corr in [
        long.as_str(),
        "",
        "has space",
        "naïve",
        "tab\there",
        &"x".repeat(129),
    ] {
        assert_eq!(
            refusal("user.created", &event(corr).to_string()),
            Refusal::Field {
                field: "correlationId",
                rule: "must be 1–128 printable ASCII characters"
            },
            "{corr:?}"
        );
    }
    assert!(
        encode(
            "user.created",
            &event(&"x".repeat(128)).to_string(),
            EventFormat::Plain
        )
        .is_ok()
    );
    for (field, value) in [
        ("eventId", json!("not-a-uuid")),
        ("eventId", json!(42)),
        ("eventId", json!("x".repeat(1000))),
        ("type", json!("T".repeat(300))),
        ("type", json!(null)),
        ("correlationId", json!(["req"])),
    ] {
        let mut e = event("req");
        e[field] = value;
        let r = refusal("user.created", &e.to_string());
        assert!(
            matches!(r, Refusal::Field { field: f, .. } if f == field),
            "{r}"
        );
    }
    let mut e = event("req");
    e.as_object_mut().unwrap().remove("correlationId");
    assert!(matches!(
        refusal("user.created", &e.to_string()),
        Refusal::Field { .. }
    ));
    e = event("req");
    e["timestamp"] = json!("yesterday");
    let m = encode("user.created", &e.to_string(), EventFormat::Plain).unwrap();
    assert_eq!(
        m.properties.timestamp(),
        &None,
        "an unreadable timestamp is left out"
    );
}

#[test]
fn routing_keys_must_be_one_word_after_user() {
    let payload = event("req").to_string();
    for key in ["user.created", "user.preferences_changed", "user.a1"] {
        assert!(encode(key, &payload, EventFormat::Plain).is_ok(), "{key}");
    }
    let long = format!("user.{}", "a".repeat(295));
    let edge = format!("user.{}", "a".repeat(251));
    assert!(
        encode(&edge[..255], &payload, EventFormat::Plain).is_ok(),
        "255 bytes is fine"
    );
    for key in [
        long.as_str(),
        &edge,
        "",
        "user.",
        "user",
        "user.a.b",
        "user.*",
        "user.#",
        "order.created",
        "USER.created",
        "user.Created",
        "user.créé",
        "user.a b",
    ] {
        assert_eq!(
            refusal(key, &payload),
            Refusal::RoutingKey { bytes: key.len() },
            "{key:?}"
        );
    }
}

#[test]
fn payloads_must_be_bounded_json_objects() {
    for payload in ["[1,2]", "\"text\"", "42", "null", "[]"] {
        assert_eq!(
            refusal("user.created", payload),
            Refusal::NotAnObject,
            "{payload}"
        );
    }
    // Valid for PostgreSQL's json type, not for serde_json.
    for payload in [
        r#"{"x": 1e400}"#,
        r#"{"x": "\ud800"}"#,
        "{",
        "",
        "{\"a\":1} x",
    ] {
        assert!(
            matches!(refusal("user.created", payload), Refusal::NotJson(_)),
            "{payload}"
        );
    }
    let mut e = event("req");
    e["data"] = nested(MAX_DEPTH - 1);
    assert!(
        encode("user.created", &e.to_string(), EventFormat::Nestjs).is_ok(),
        "at the bound"
    );
    e["data"] = nested(MAX_DEPTH);
    assert_eq!(refusal("user.created", &e.to_string()), Refusal::TooDeep);
    let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        refusal("user.created", &very_deep),
        Refusal::NotJson(_)
    ));

    e["data"] = json!("x".repeat(MAX_EVENT_BYTES));
    let big = e.to_string();
    assert_eq!(
        refusal("user.created", &big),
        Refusal::TooLarge { bytes: big.len() }
    );
    // Within the bound as stored, but larger once re-encoded (1E9 becomes 1000000000.0).
    let numbers = vec!["1E9"; (MAX_EVENT_BYTES - 300) / 4].join(",");
    e["data"] = json!(null);
    let grows = e.to_string().replace("null", &format!("[{numbers}]"));
    assert!(grows.len() <= MAX_EVENT_BYTES);
    assert!(matches!(
        refusal("user.created", &grows),
        Refusal::BodyTooLarge { .. }
    ));
}

#[test]
fn reasons_never_quote_the_value() {
    let hostile = "\u{202e}evil".repeat(100);
    let mut e = event("req");
    e["correlationId"] = json!(hostile);
    let reason = refusal("user.created", &e.to_string()).to_string();
    assert!(!reason.contains("evil") && reason.len() < 100, "{reason}");
    let reason = refusal(&format!("user.{hostile}"), &e.to_string()).to_string();
    assert!(!reason.contains("evil") && reason.len() < 100, "{reason}");
}

#[test]
fn bounds_on_write() {
    let text = check_bounds(&event("req")).unwrap();
    assert_eq!(text, event("req").to_string());
    let mut e = event("req");
    e["data"] = nested(MAX_DEPTH);
    assert_eq!(check_bounds(&e), Err(Refusal::TooDeep));
    e["data"] = json!("x".repeat(MAX_EVENT_BYTES));
    assert!(matches!(check_bounds(&e), Err(Refusal::TooLarge { .. })));
    assert_eq!(check_bounds(&json!([])), Err(Refusal::NotAnObject));
}

#[test]
fn depth_counts_containers() {
    assert!(!deeper_than(&json!(1), 0));
    assert!(deeper_than(&json!([]), 0));
    assert!(!deeper_than(&json!({"a": [1]}), 2));
    assert!(deeper_than(&json!({"a": [[1]]}), 2));
    assert!(!deeper_than(&nested(MAX_DEPTH), MAX_DEPTH));
    assert!(deeper_than(&nested(MAX_DEPTH + 1), MAX_DEPTH));
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A property value: often valid, often not, sometimes not a string at all.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => any::<[u8; 16]>().prop_map(|b| json!(Uuid::from_bytes(b).to_string())),
        4 => "[!-~]{1,128}".prop_map(Value::from),
        1 => "[!-~]{129,300}".prop_map(Value::from),
        1 => "\\PC{0,200}".prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => json_value(),
    ]
}

fn routing_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "user\\.[a-z0-9_]{1,40}",
        1 => "user\\.[a-z]{245,260}",
        1 => "user\\.\\PC{0,20}",
        1 => "\\PC{0,300}",
        1 => any::<String>(),
    ]
}

/// Either a message that honours every rule, or a refusal with a short reason.
fn encodes_or_refuses(key: &str, payload: &str) -> Result<bool, TestCaseError> {
    for envelope in [EventFormat::Plain, EventFormat::Nestjs] {
        match encode(key, payload, envelope) {
            Ok(m) => {
                prop_assert!(routing_key_ok(m.routing_key.as_str()));
                prop_assert_eq!(m.routing_key.as_str(), key);
                prop_assert!(m.body.len() <= MAX_BODY_BYTES);
                let body: Value = serde_json::from_slice(&m.body).unwrap();
                prop_assert!(body.is_object());
                let corr = m
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(ShortString::as_str);
                prop_assert!(corr.is_some_and(CorrelationId::is_valid));
                let id = m.properties.message_id().as_ref().map(ShortString::as_str);
                prop_assert!(id.is_some_and(|id| Uuid::try_parse(id).is_ok()));
            }
            Err(r) => prop_assert!(r.to_string().len() < 200, "{}", r),
        }
    }
    Ok(encode(key, payload, EventFormat::Plain).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_encodes_or_is_refused(
        key in routing_key(), event_id in field(), kind in field(), corr in field(),
        data in json_value(),
    ) {
        let valid = |v: &Value| v.as_str().is_some_and(CorrelationId::is_valid);
        let expected = routing_key_ok(&key)
            && valid(&event_id) && event_id.as_str().is_some_and(|s| Uuid::try_parse(s).is_ok())
            && valid(&kind) && valid(&corr);
        let payload = json!({"eventId": event_id, "type": kind, "correlationId": corr,
                             "timestamp": "2024-01-01T00:00:00.000Z", "data": data});
        let encoded = encodes_or_refuses(&key, &payload.to_string())?;
        prop_assert_eq!(encoded, expected);
    }

    #[test]
    fn any_json_payload_encodes_or_is_refused(key in routing_key(), payload in json_value()) {
        let encoded = encodes_or_refuses(&key, &payload.to_string())?;
        prop_assert!(!encoded || payload.is_object());
    }

    #[test]
    fn any_text_encodes_or_is_refused(key in any::<String>(), payload in any::<String>()) {
        let encoded = encodes_or_refuses(&key, &payload)?;
        prop_assert!(!encoded, "random text is not a valid event");
    }
}
