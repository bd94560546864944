//! Billing data sealed at rest: `taxId` and `billingAddress` of a user's billing info are
//! stored (in PostgreSQL, in the Redis cache and in the request ledger's replies) as
//! `enc:v2:<kid>:<base64(nonce || ct)>`, AES-256-GCM with a fresh random 96-bit nonce per value
//! and the value's place as associated data: the user's id (or, in the ledger, the request
//! key) and the field's name. A value copied into another user's row, or into another field,
//! does not open: an error, never another user's data.
//!
//! Keys come as `kid:base64key,...` (32-byte keys, standard base64): the last key seals,
//! every key opens, so a key can be rotated in while values sealed under older keys are
//! still read. Older forms still open until `user-service rekey` moves them to `v2`: a value
//! without the `enc:` prefix (written before sealing existed) is read as it is, and
//! `enc:v1:` (sealed without a place) opens wherever it is.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use user_domain::error::CoreError;
use user_domain::views::Rendered;
use user_domain::{User, UserId};

/// What every sealed value starts with, whatever its version.
pub const PREFIX: &str = "enc:";
/// Sealed without a place (before places existed): still opened.
const V1: &str = "enc:v1:";
/// Sealed with its place as associated data: what is written now.
const V2: &str = "enc:v2:";
/// The fields of billing info that are sealed.
pub const SEALED_FIELDS: [&str; 2] = user_domain::BillingInfo::SECRET_FIELDS;
/// The key used when none is configured, outside production only.
pub const DEVELOPMENT_KEYS: &str = "dev:dXNlci1zZXJ2aWNlLWRldmVsb3BtZW50LWtleSEhISE=";
const NONCE_LEN: usize = 12;
const MAX_KID_LEN: usize = 16;

/// Where a sealed value belongs; it opens only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// A field of this user's billing info (the users table, the cache).
    User(UserId),
    /// A field of the reply a request key keeps in the ledger.
    Request(&'a str),
    /// A copy the service never opens again (a dead letter).
    Unbound,
}

impl Place<'_> {
    /// The associated data of `field` here: versioned, and unambiguous (ids hold no `:`).
    fn aad(self, field: &str) -> String {
        match self {
            Self::User(id) => format!("user-service:v2:user:{}:{field}", id.as_uuid()),
            Self::Request(key) => format!("user-service:v2:request:{}:{field}", key.len()) + key,
            Self::Unbound => format!("user-service:v2:unbound:{field}"),
        }
    }
}

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

    /// Seals `plain`, the `field` at `place`, under the current key, with a fresh nonce.
    pub fn seal(&self, plain: &str, place: Place, field: &str) -> Result<String, CoreError> {
        let (kid, cipher) = self.current();
        let nonce = Nonce::<Aes256Gcm>::try_generate()
            .map_err(|e| internal(format!("no random nonce for a billing value: {e}")))?;
        let aad = place.aad(field);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: aad.as_bytes(),
        };
        let ct = cipher
            .encrypt(&nonce, payload)
            .map_err(|_| internal("a billing value could not be sealed".to_owned()))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        Ok(format!("{V2}{kid}:{}", STANDARD.encode(raw)))
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
                            let sealed = self
                                .seal(&text, Place::Unbound, key)
                                .unwrap_or_else(|_| "[withheld]".to_owned());
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

    /// The plain text of a stored value, the `field` at `place`: a sealed value opened, a
    /// legacy value as it is. An unknown key id, a tampered value or one sealed for another
    /// place is an internal error; the value is never quoted.
    pub fn open(&self, stored: &str, place: Place, field: &str) -> Result<String, CoreError> {
        let (rest, aad) = if let Some(rest) = stored.strip_prefix(V2) {
            (rest, place.aad(field))
        } else if let Some(rest) = stored.strip_prefix(V1) {
            (rest, String::new())
        } else if stored.starts_with(PREFIX) {
            return Err(internal(
                "a billing value is sealed in a form this version does not know".to_owned(),
            ));
        } else {
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
        let payload = Payload {
            msg: ct,
            aad: aad.as_bytes(),
        };
        let plain = cipher.decrypt(&nonce, payload).map_err(|_| {
            internal(format!(
                "a billing value sealed under '{kid}' does not open: tampered, moved from another user or field, or the key changed"
            ))
        })?;
        String::from_utf8(plain)
            .map_err(|_| internal(format!("a billing value sealed under '{kid}' is not UTF-8")))
    }

    /// Whether a stored value is sealed in the current form under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(V2)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(kid, _)| kid == self.current_kid())
    }

    /// Billing info JSON as stored at `place`: its sealed fields sealed.
    pub fn seal_billing(&self, info: &mut Value, place: Place) -> Result<(), CoreError> {
        self.each_field(info, |keys, s, field| keys.seal(s, place, field).map(Some))
    }

    /// Stored billing info JSON opened back (legacy plain values kept as they are).
    pub fn open_billing(&self, info: &mut Value, place: Place) -> Result<(), CoreError> {
        self.each_field(info, |keys, s, field| keys.open(s, place, field).map(Some))
    }

    /// Reseals every field not in the current form under the current key; whether anything
    /// changed.
    pub fn rekey_billing(&self, info: &mut Value, place: Place) -> Result<bool, CoreError> {
        let mut changed = false;
        self.each_field(info, |keys, s, field| {
            if keys.is_current(s) {
                return Ok(None);
            }
            changed = true;
            keys.seal(&keys.open(s, place, field)?, place, field)
                .map(Some)
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
            self.seal_billing(info, Place::User(r.user.id))?;
        }
        Ok(v.to_string())
    }

    /// A user from its cached JSON; its billing fields open only for the user it names.
    pub fn open_user(&self, stored: &str) -> Result<User, CoreError> {
        // Most users have nothing sealed: read those straight, without the detour via Value.
        if !stored.contains(PREFIX) {
            return serde_json::from_str(stored)
                .map_err(|e| internal(format!("a cached user is invalid: {e}")));
        }
        let mut v: Value = serde_json::from_str(stored)
            .map_err(|e| internal(format!("a cached user is not JSON: {e}")))?;
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| UserId::parse(id).ok())
            .ok_or_else(|| internal("a cached user has no valid id".to_owned()))?;
        if let Some(info) = v.get_mut("billingInfo") {
            self.open_billing(info, Place::User(id))?;
        }
        serde_json::from_value(v).map_err(|e| internal(format!("a cached user is invalid: {e}")))
    }

    fn each_field(
        &self,
        info: &mut Value,
        mut f: impl FnMut(&Self, &str, &str) -> Result<Option<String>, CoreError>,
    ) -> Result<(), CoreError> {
        let Some(obj) = info.as_object_mut() else {
            return Ok(());
        };
        for field in SEALED_FIELDS {
            if let Some(Value::String(s)) = obj.get_mut(field)
                && let Some(new) = f(self, s, field)?
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
mod tests;
