//! Billing data sealed at rest: `taxId` and `billingAddress` of a user's billing info are
//! stored (in PostgreSQL and in the Redis cache) as `enc:v1:<kid>:<base64(nonce || ct)>`,
//! AES-256-GCM with a fresh random 96-bit nonce per value.
//!
//! Keys come as `kid:base64key,...` (32-byte keys, standard base64): the last key seals,
//! every key opens, so a key can be rotated in while values sealed under older keys are
//! still read. A stored value without the `enc:v1:` prefix was written before sealing
//! existed and is read as it is (legacy); `user-service rekey` seals those too.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use user_domain::User;
use user_domain::error::CoreError;
use user_domain::views::Rendered;

/// What every sealed value starts with.
pub const PREFIX: &str = "enc:v1:";
/// The fields of billing info that are sealed.
pub const SEALED_FIELDS: [&str; 2] = user_domain::BillingInfo::SECRET_FIELDS;
/// The key used when none is configured, outside production only.
pub const DEVELOPMENT_KEYS: &str = "dev:dXNlci1zZXJ2aWNlLWRldmVsb3BtZW50LWtleSEhISE=";
const NONCE_LEN: usize = 12;
const MAX_KID_LEN: usize = 16;

/// The billing keys: the last one seals, all of them open.
pub struct BillingKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl fmt::Debug for BillingKeys {
    /// Names the key ids only, never a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("BillingKeys").field("kids", &kids).finish()
    }
}

impl BillingKeys {
    /// Parses `kid:base64key,...`; the error never quotes a key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, key) = entry
                .split_once(':')
                .ok_or("expected kid:base64key entries separated by commas")?;
            let kid = kid.trim();
            let valid_kid = !kid.is_empty()
                && kid.len() <= MAX_KID_LEN
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_kid {
                return Err(format!(
                    "a key id must be 1 to {MAX_KID_LEN} letters, digits, '-' or '_'"
                ));
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(format!("key id '{kid}' is given twice"));
            }
            let bytes = STANDARD
                .decode(key.trim())
                .map_err(|_| format!("the key of '{kid}' is not standard base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| format!("the key of '{kid}' is not 32 bytes"))?;
            keys.push((kid.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err("no key given".to_owned());
        }
        Ok(Self { keys })
    }

    /// The fixed development key: never for production.
    pub fn development() -> Self {
        match Self::parse(DEVELOPMENT_KEYS) {
            Ok(k) => k,
            Err(e) => unreachable!("the development key is valid: {e}"),
        }
    }

    /// The id of the key that seals.
    pub fn current_kid(&self) -> &str {
        self.current().0.as_str()
    }

    fn current(&self) -> &(String, Aes256Gcm) {
        match self.keys.last() {
            Some(k) => k,
            None => unreachable!("parse refuses an empty key list"),
        }
    }

    /// Seals `plain` under the current key, with a fresh nonce.
    pub fn seal(&self, plain: &str) -> Result<String, CoreError> {
        let (kid, cipher) = self.current();
        let nonce = Nonce::<Aes256Gcm>::try_generate()
            .map_err(|e| internal(format!("no random nonce for a billing value: {e}")))?;
        let ct = cipher
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| internal("a billing value could not be sealed".to_owned()))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{kid}:{}", STANDARD.encode(raw)))
    }

    /// Seals, in place, every `taxId` and `billingAddress` value anywhere in `doc` (a request
    /// body kept as a dead letter, say), so billing values never rest in plain text: a text
    /// as it is, any other JSON value (a number, an object) as its JSON text. A value that
    /// cannot be sealed is withheld. Returns whether anything changed.
    pub fn seal_billing_fields(&self, doc: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match doc {
            Value::Object(map) => {
                let mut changed = false;
                for (key, value) in map.iter_mut() {
                    let billing = SEALED_FIELDS.contains(&key.as_str());
                    match value {
                        Value::String(text) if billing && text.starts_with(PREFIX) => {}
                        Value::Null => {}
                        // Any other type too (a number for `taxId`): its JSON text is sealed.
                        other if billing => {
                            let text = match &mut *other {
                                Value::String(text) => std::mem::take(text),
                                v => v.to_string(),
                            };
                            let sealed =
                                self.seal(&text).unwrap_or_else(|_| "[withheld]".to_owned());
                            *other = Value::String(sealed);
                            changed = true;
                        }
                        other => changed |= self.seal_billing_fields(other),
                    }
                }
                changed
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| self.seal_billing_fields(v) | changed),
            _ => false,
        }
    }

    /// The plain text of a stored value: a sealed value opened, a legacy value as it is.
    /// An unknown key id or a tampered value is an internal error; the value is never quoted.
    pub fn open(&self, stored: &str) -> Result<String, CoreError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (kid, body) = rest
            .split_once(':')
            .ok_or_else(|| internal("a sealed billing value has no key id".to_owned()))?;
        let (_, cipher) = self.keys.iter().find(|(k, _)| k == kid).ok_or_else(|| {
            internal(format!(
                "a billing value is sealed under key id '{kid}', which is not configured in BILLING_KEYS"
            ))
        })?;
        let raw = STANDARD.decode(body).map_err(|_| {
            internal(format!(
                "a billing value sealed under '{kid}' is not base64"
            ))
        })?;
        if raw.len() < NONCE_LEN {
            return Err(internal(format!(
                "a billing value sealed under '{kid}' is truncated"
            )));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| {
            internal(format!(
                "a billing value sealed under '{kid}' has a bad nonce"
            ))
        })?;
        let plain = cipher.decrypt(&nonce, ct).map_err(|_| {
            internal(format!(
                "a billing value sealed under '{kid}' does not open: tampered, or the key changed"
            ))
        })?;
        String::from_utf8(plain)
            .map_err(|_| internal(format!("a billing value sealed under '{kid}' is not UTF-8")))
    }

    /// Whether a stored value is sealed under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(kid, _)| kid == self.current_kid())
    }

    /// Billing info JSON as stored: its sealed fields sealed.
    pub fn seal_billing(&self, info: &mut Value) -> Result<(), CoreError> {
        self.each_field(info, |keys, s| keys.seal(s).map(Some))
    }

    /// Stored billing info JSON opened back (legacy plain values kept as they are).
    pub fn open_billing(&self, info: &mut Value) -> Result<(), CoreError> {
        self.each_field(info, |keys, s| keys.open(s).map(Some))
    }

    /// Reseals every field not under the current key; whether anything changed.
    pub fn rekey_billing(&self, info: &mut Value) -> Result<bool, CoreError> {
        let mut changed = false;
        self.each_field(info, |keys, s| {
            if keys.is_current(s) {
                return Ok(None);
            }
            changed = true;
            keys.seal(&keys.open(s)?).map(Some)
        })?;
        Ok(changed)
    }

    /// A user as the cache stores it: its JSON with the billing fields sealed (the rendered
    /// JSON itself when it holds nothing to seal).
    pub fn seal_user(&self, r: &Rendered) -> Result<String, CoreError> {
        let sealable = r
            .user
            .billing_info
            .as_ref()
            .is_some_and(|b| b.tax_id.is_some() || b.billing_address.is_some());
        if !sealable {
            return Ok(r.json().get().to_owned());
        }
        let mut v = serde_json::to_value(&r.user)
            .map_err(|e| internal(format!("a user does not serialise: {e}")))?;
        if let Some(info) = v.get_mut("billingInfo") {
            self.seal_billing(info)?;
        }
        Ok(v.to_string())
    }

    /// A user from its cached JSON.
    pub fn open_user(&self, stored: &str) -> Result<User, CoreError> {
        // Most users have nothing sealed: read those straight, without the detour via Value.
        if !stored.contains(PREFIX) {
            return serde_json::from_str(stored)
                .map_err(|e| internal(format!("a cached user is invalid: {e}")));
        }
        let mut v: Value = serde_json::from_str(stored)
            .map_err(|e| internal(format!("a cached user is not JSON: {e}")))?;
        if let Some(info) = v.get_mut("billingInfo") {
            self.open_billing(info)?;
        }
        serde_json::from_value(v).map_err(|e| internal(format!("a cached user is invalid: {e}")))
    }

    fn each_field(
        &self,
        info: &mut Value,
        mut f: impl FnMut(&Self, &str) -> Result<Option<String>, CoreError>,
    ) -> Result<(), CoreError> {
        let Some(obj) = info.as_object_mut() else {
            return Ok(());
        };
        for field in SEALED_FIELDS {
            if let Some(Value::String(s)) = obj.get_mut(field)
                && let Some(new) = f(self, s)?
            {
                *s = new;
            }
        }
        Ok(())
    }
}

fn internal(msg: String) -> CoreError {
    tracing::error!(error = %msg, "billing data at rest");
    CoreError::Internal(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(kid: &str, byte: u8) -> String {
        format!("{kid}:{}", STANDARD.encode([byte; 32]))
    }

    fn keys(entries: &[(&str, u8)]) -> BillingKeys {
        let s: Vec<String> = entries.iter().map(|(k, b)| key(k, *b)).collect();
        BillingKeys::parse(&s.join(",")).unwrap()
    }

    #[test]
    fn round_trips_with_a_fresh_nonce() {
        let k = keys(&[("k1", 1)]);
        let a = k.seal("123456789012").unwrap();
        let b = k.seal("123456789012").unwrap();
        assert!(a.starts_with("enc:v1:k1:"), "{a}");
        assert!(!a.contains("123456789012"));
        assert_ne!(a, b, "every value gets its own nonce");
        assert_eq!(k.open(&a).unwrap(), "123456789012");
        assert_eq!(k.open(&b).unwrap(), "123456789012");
    }

    #[test]
    fn the_last_key_seals_and_old_keys_still_open() {
        let old = keys(&[("k1", 1)]);
        let rotated = keys(&[("k1", 1), ("k2", 2)]);
        let sealed_old = old.seal("Москва").unwrap();
        assert_eq!(rotated.open(&sealed_old).unwrap(), "Москва");
        let sealed_new = rotated.seal("Москва").unwrap();
        assert!(sealed_new.starts_with("enc:v1:k2:"));
        assert!(rotated.is_current(&sealed_new));
        assert!(!rotated.is_current(&sealed_old));
        assert!(
            old.open(&sealed_new).is_err(),
            "k2 is unknown to the old set"
        );
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let k = keys(&[("k1", 1)]);
        let sealed = k.seal("secret address").unwrap();
        let body = sealed.strip_prefix("enc:v1:k1:").unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("enc:v1:k1:{}", STANDARD.encode(&raw));
        for bad in [
            tampered,
            "enc:v1:k1:!!!".to_owned(),
            "enc:v1:k1:AAAA".to_owned(),
            "enc:v1:nokid".to_owned(),
            sealed.replace("enc:v1:k1:", "enc:v1:k9:"),
        ] {
            let err = k.open(&bad).unwrap_err();
            assert!(matches!(err, CoreError::Internal(_)), "{bad}");
            assert!(!err.to_string().contains("secret address"));
        }
        let wrong = keys(&[("k1", 7)]);
        assert!(matches!(wrong.open(&sealed), Err(CoreError::Internal(_))));
    }

    #[test]
    fn a_value_without_the_prefix_is_legacy_plain_text() {
        let k = keys(&[("k1", 1)]);
        assert_eq!(k.open("123456789012").unwrap(), "123456789012");
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
        let mut v = plain.clone();
        k.seal_billing(&mut v).unwrap();
        assert!(v["taxId"].as_str().unwrap().starts_with(PREFIX));
        assert!(v["billingAddress"].as_str().unwrap().starts_with(PREFIX));
        assert_eq!(v["currency"], "RUB");
        let mut opened = v.clone();
        k.open_billing(&mut opened).unwrap();
        assert_eq!(opened, plain);

        let rotated = keys(&[("k1", 1), ("k2", 2)]);
        let mut legacy = plain.clone();
        assert!(rotated.rekey_billing(&mut legacy).unwrap(), "legacy sealed");
        assert!(rotated.is_current(legacy["taxId"].as_str().unwrap()));
        assert!(rotated.rekey_billing(&mut v).unwrap(), "k1 resealed");
        assert!(!rotated.rekey_billing(&mut v).unwrap(), "already current");
        rotated.open_billing(&mut v).unwrap();
        assert_eq!(v, plain);
    }

    proptest! {
        #[test]
        fn any_string_round_trips(s in any::<String>()) {
            let k = keys(&[("k1", 1), ("k2", 2)]);
            let sealed = k.seal(&s).unwrap();
            prop_assert!(k.is_current(&sealed));
            prop_assert_eq!(k.open(&sealed).unwrap(), s);
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
            k.open(doc["params"]["taxId"].as_str().unwrap()).unwrap(),
            "7707083893"
        );
        assert_eq!(doc["params"]["currency"], "RUB");
        let mut other = serde_json::json!({"method": "users.get", "params": {"id": "x"}});
        assert!(!k.seal_billing_fields(&mut other));
        let mut typed = serde_json::json!({"params": {"taxId": 7707083893u64,
            "billingAddress": {"city": "Moscow", "zip": 101000}, "nested": [{"taxId": [500100732259u64]}]}});
        assert!(k.seal_billing_fields(&mut typed));
        let text = typed.to_string();
        for plain in ["7707083893", "Moscow", "101000", "500100732259"] {
            assert!(!text.contains(plain), "{text}");
        }
        assert_eq!(
            k.open(typed["params"]["taxId"].as_str().unwrap()).unwrap(),
            "7707083893"
        );
    }
}
