use super::*;
use proptest::prelude::*;
use serde_json::json;

fn key(kid: &str, byte: u8) -> String {
    format!("{kid}:{}", STANDARD.encode([byte; 32]))
}

const ALICE: &str = "0190a0b0-0000-7000-8000-00000000000a";
const BOB: &str = "0190a0b0-0000-7000-8000-00000000000b";

fn user(id: &str) -> Place<'static> {
    Place::User(UserId::parse(id).unwrap())
}

fn keys(entries: &[(&str, u8)]) -> BillingKeys {
    let s: Vec<String> = entries.iter().map(|(k, b)| key(k, *b)).collect();
    BillingKeys::parse(&s.join(",")).unwrap()
}

#[test]
fn round_trips_with_a_fresh_nonce() {
    let k = keys(&[("k1", 1)]);
    let a = k.seal("123456789012", user(ALICE), "taxId").unwrap();
    let b = k.seal("123456789012", user(ALICE), "taxId").unwrap();
    assert!(a.starts_with("enc:v2:k1:"), "{a}");
    assert!(!a.contains("123456789012"));
    assert_ne!(a, b, "every value gets its own nonce");
    assert_eq!(k.open(&a, user(ALICE), "taxId").unwrap(), "123456789012");
    assert_eq!(k.open(&b, user(ALICE), "taxId").unwrap(), "123456789012");
}

#[test]
fn a_value_opens_only_in_its_place() {
    let k = keys(&[("k1", 1)]);
    let sealed = k.seal("123456789012", user(ALICE), "taxId").unwrap();
    for (place, field) in [
        (user(BOB), "taxId"),
        (user(ALICE), "billingAddress"),
        (Place::Request(ALICE), "taxId"),
        (Place::Unbound, "taxId"),
    ] {
        let err = k.open(&sealed, place, field).unwrap_err();
        assert!(matches!(err, CoreError::Internal(_)), "{place:?} {field}");
        assert!(!err.to_string().contains("123456789012"));
    }
    let keyed = k.seal("x", Place::Request("a:b"), "taxId").unwrap();
    assert!(
        k.open(&keyed, Place::Request("a"), "b:taxId").is_err(),
        "request keys and field names do not run into each other"
    );
    assert_eq!(k.open(&keyed, Place::Request("a:b"), "taxId").unwrap(), "x");
}

/// Sealed as before places existed: `enc:v1:` without associated data.
fn seal_v1(k: &BillingKeys, plain: &str) -> String {
    let (kid, cipher) = k.current();
    let nonce = Nonce::<Aes256Gcm>::try_generate().unwrap();
    let mut raw = nonce.to_vec();
    raw.extend(cipher.encrypt(&nonce, plain.as_bytes()).unwrap());
    format!("enc:v1:{kid}:{}", STANDARD.encode(raw))
}

#[test]
fn v1_values_open_anywhere_until_rekeyed_into_their_place() {
    let k = keys(&[("k1", 1)]);
    let old = seal_v1(&k, "Москва");
    assert_eq!(k.open(&old, user(BOB), "billingAddress").unwrap(), "Москва");
    assert!(!k.is_current(&old), "v1 is not the current form");
    let mut info = json!({"billingAddress": old});
    assert!(k.rekey_billing(&mut info, user(ALICE)).unwrap());
    let moved = info["billingAddress"].as_str().unwrap();
    assert!(moved.starts_with("enc:v2:k1:"), "{moved}");
    assert!(k.open(moved, user(BOB), "billingAddress").is_err());
    assert_eq!(
        k.open(moved, user(ALICE), "billingAddress").unwrap(),
        "Москва"
    );
    assert!(
        k.open("enc:v9:k1:AAAA", user(ALICE), "taxId").is_err(),
        "an unknown form is an error, not plain text"
    );
}

#[test]
fn a_cached_user_opens_only_under_its_own_id() {
    let k = keys(&[("k1", 1)]);
    let mut info = json!({"taxId": "123456789012", "currency": "RUB"});
    k.seal_billing(&mut info, user(ALICE)).unwrap();
    let stored = |id: &str| json!({"id": id, "billingInfo": info.clone()}).to_string();
    let err = format!("{:?}", k.open_user(&stored(BOB)).unwrap_err());
    assert!(err.contains("does not open"), "{err}");
    assert!(!err.contains("123456789012"));
    let own = format!("{:?}", k.open_user(&stored(ALICE)).unwrap_err());
    assert!(
        !own.contains("does not open"),
        "opens for its own id: {own}"
    );
}

#[test]
fn the_last_key_seals_and_old_keys_still_open() {
    let old = keys(&[("k1", 1)]);
    let rotated = keys(&[("k1", 1), ("k2", 2)]);
    let p = user(ALICE);
    let sealed_old = old.seal("Москва", p, "billingAddress").unwrap();
    assert_eq!(
        rotated.open(&sealed_old, p, "billingAddress").unwrap(),
        "Москва"
    );
    let sealed_new = rotated.seal("Москва", p, "billingAddress").unwrap();
    assert!(sealed_new.starts_with("enc:v2:k2:"));
    assert!(rotated.is_current(&sealed_new));
    assert!(!rotated.is_current(&sealed_old));
    assert!(
        old.open(&sealed_new, p, "billingAddress").is_err(),
        "k2 is unknown to the old set"
    );
}

#[test]
fn tampering_and_wrong_keys_are_refused() {
    let k = keys(&[("k1", 1)]);
    let p = user(ALICE);
    let sealed = k.seal("secret address", p, "billingAddress").unwrap();
    let body = sealed.strip_prefix("enc:v2:k1:").unwrap();
    let mut raw = STANDARD.decode(body).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let tampered = format!("enc:v2:k1:{}", STANDARD.encode(&raw));
    for bad in [
        tampered,
        "enc:v2:k1:!!!".to_owned(),
        "enc:v2:k1:AAAA".to_owned(),
        "enc:v2:nokid".to_owned(),
        sealed.replace("enc:v2:k1:", "enc:v2:k9:"),
    ] {
        let err = k.open(&bad, p, "billingAddress").unwrap_err();
        assert!(matches!(err, CoreError::Internal(_)), "{bad}");
        assert!(!err.to_string().contains("secret address"));
    }
    let wrong = keys(&[("k1", 7)]);
    assert!(matches!(
        wrong.open(&sealed, p, "billingAddress"),
        Err(CoreError::Internal(_))
    ));
}

#[test]
fn a_value_without_the_prefix_is_legacy_plain_text() {
    let k = keys(&[("k1", 1)]);
    assert_eq!(
        k.open("123456789012", user(ALICE), "taxId").unwrap(),
        "123456789012"
    );
}

#[test]
fn parse_refuses_bad_lists_without_quoting_keys() {
    for bad in [
        "",
        "k1",
        ":AAAA",
        "k1:not base64",
        "k1:AAAA",
        "a:b:c",
        &format!("{},{}", key("k1", 1), key("k1", 2)),
        &format!("bad kid:{}", STANDARD.encode([1; 32])),
    ] {
        let err = BillingKeys::parse(bad).err().unwrap_or_default();
        assert!(!err.is_empty(), "{bad:?} accepted");
    }
    let k = keys(&[("k1", 1), ("k2", 2)]);
    assert_eq!(k.current_kid(), "k2");
    assert_eq!(format!("{k:?}"), r#"BillingKeys { kids: ["k1", "k2"] }"#);
    assert_eq!(BillingKeys::development().current_kid(), "dev");
}

#[test]
fn billing_json_seals_only_the_sensitive_fields() {
    let k = keys(&[("k1", 1)]);
    let plain = json!({"taxId": "123456789012", "billingAddress": "Москва",
                       "currency": "RUB", "paymentMethods": ["card"]});
    let p = user(ALICE);
    let mut v = plain.clone();
    k.seal_billing(&mut v, p).unwrap();
    assert!(v["taxId"].as_str().unwrap().starts_with(PREFIX));
    assert!(v["billingAddress"].as_str().unwrap().starts_with(PREFIX));
    assert_eq!(v["currency"], "RUB");
    let mut opened = v.clone();
    k.open_billing(&mut opened, p).unwrap();
    assert_eq!(opened, plain);

    let rotated = keys(&[("k1", 1), ("k2", 2)]);
    let mut legacy = plain.clone();
    assert!(
        rotated.rekey_billing(&mut legacy, p).unwrap(),
        "legacy sealed"
    );
    assert!(rotated.is_current(legacy["taxId"].as_str().unwrap()));
    assert!(rotated.rekey_billing(&mut v, p).unwrap(), "k1 resealed");
    assert!(
        !rotated.rekey_billing(&mut v, p).unwrap(),
        "already current"
    );
    rotated.open_billing(&mut v, p).unwrap();
    assert_eq!(v, plain);
}

proptest! {
    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        let k = keys(&[("k1", 1), ("k2", 2)]);
        let sealed = k.seal(&s, user(ALICE), "taxId").unwrap();
        prop_assert!(k.is_current(&sealed));
        prop_assert_eq!(k.open(&sealed, user(ALICE), "taxId").unwrap(), s);
    }
}

#[test]
fn billing_fields_are_sealed_wherever_they_are() {
    let k = keys(&[("k1", 1)]);
    let mut doc = serde_json::json!({"method": "users.updateBillingInfo",
        "params": {"id": "x", "taxId": "7707083893", "billingAddress": "Moscow",
                   "nested": [{"taxId": "500100732259"}], "currency": "RUB"}});
    assert!(k.seal_billing_fields(&mut doc));
    let text = doc.to_string();
    for plain in ["7707083893", "Moscow", "500100732259"] {
        assert!(!text.contains(plain), "{text}");
    }
    assert_eq!(
        k.open(
            doc["params"]["taxId"].as_str().unwrap(),
            Place::Unbound,
            "taxId"
        )
        .unwrap(),
        "7707083893"
    );
    assert_eq!(doc["params"]["currency"], "RUB");
    let mut other = serde_json::json!({"method": "users.get", "params": {"id": "x"}});
    assert!(!k.seal_billing_fields(&mut other));
}
