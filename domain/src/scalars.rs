use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Invalid, string_newtype};
use crate::quote::{QUOTE_CHARS, cut};

/// A user's id. Any textual UUID form parses; it always prints hyphenated and lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct UserId(Uuid);

impl UserId {
    /// A new time-ordered id (v7): new rows land at the right edge of the primary-key index.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Uuid::try_parse(s.trim())
            .map(Self)
            .map_err(|_| Invalid::new(format!("'{}' is not a valid UUID", cut(s, QUOTE_CHARS))))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for UserId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl TryFrom<String> for UserId {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(&value)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A display name: 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct UserName(String);
string_newtype!(UserName);

impl UserName {
    pub const MAX: usize = 100;

    /// Spaces around the name are trimmed; control characters (a newline, a tab) are
    /// refused wherever they are.
    pub fn parse(s: impl AsRef<str>) -> Result<Self, Invalid> {
        if has_control(s.as_ref()) {
            return Err(Invalid::new("must not contain control characters"));
        }
        let trimmed = s.as_ref().trim();
        let len = trimmed.chars().count();
        if len == 0 {
            return Err(Invalid::new("must not be empty"));
        }
        if len > Self::MAX {
            return Err(Invalid::new(format!(
                "must be at most {} characters (got {len})",
                Self::MAX
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// A password hash made by the caller. The service never sees a clear-text password, so it
/// only accepts strings that look like the output of bcrypt, argon2 or scrypt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct PasswordHash(String);
string_newtype!(PasswordHash);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(…)")
    }
}

impl PasswordHash {
    const PREFIXES: [&'static str; 5] = ["$2a$", "$2b$", "$2y$", "$argon2", "$scrypt$"];

    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        let len = s.chars().count();
        if !(8..=255).contains(&len) {
            return Err(Invalid::new("must be 8–255 characters"));
        }
        if !Self::PREFIXES.iter().any(|p| s.starts_with(p)) {
            return Err(Invalid::new(
                "must be a bcrypt ($2a$/$2b$/$2y$), argon2 ($argon2…) or scrypt ($scrypt$) hash",
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new("must not contain whitespace"));
        }
        Ok(Self(s))
    }
}

/// An http(s) URL of at most 500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct AvatarUrl(String);
string_newtype!(AvatarUrl);

impl AvatarUrl {
    pub const MAX: usize = 500;

    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if s.chars().count() > Self::MAX {
            return Err(Invalid::new(format!(
                "must be at most {} characters",
                Self::MAX
            )));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Invalid::new("must be an http or https URL"));
        }
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Self(s)),
            _ => Err(Invalid::new("must be an http or https URL")),
        }
    }
}

/// Free text with an upper bound on its length in characters (no control characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct BoundedText<const MAX: usize>(String);

impl<const MAX: usize> BoundedText<MAX> {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if s.chars().count() > MAX {
            return Err(Invalid::new(format!("must be at most {MAX} characters")));
        }
        if has_control(&s) {
            return Err(Invalid::new("must not contain control characters"));
        }
        Ok(Self(s))
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedText<MAX> {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(value)
    }
}

impl<const MAX: usize> From<BoundedText<MAX>> for String {
    fn from(value: BoundedText<MAX>) -> String {
        value.0
    }
}

impl<const MAX: usize> AsRef<str> for BoundedText<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A payment's id as the Payment service names it: 1–128 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct PaymentId(String);
string_newtype!(PaymentId);

impl PaymentId {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Invalid::new("must be 1–128 characters without whitespace"));
        }
        Ok(Self(s))
    }
}

/// Ties logs, replies and events of one request together (contract section 4): 1–128
/// printable ASCII characters, so it fits every header and AMQP property it is copied into.
/// A caller's id that breaks the rule is not used; a fresh one is generated instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct CorrelationId(String);
string_newtype!(CorrelationId);

impl CorrelationId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(Invalid::new("must be 1–128 printable ASCII characters"))
        }
    }

    /// Does `s` follow the rule? (Also the rule for other ids taken from a message.)
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic())
    }

    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The caller's id when it follows the rule, else a fresh one.
    pub fn or_generate(candidate: Option<&str>) -> Self {
        candidate
            .and_then(|c| Self::parse(c).ok())
            .unwrap_or_else(Self::generate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free JSON owned by the callers, bounded to 16 KiB of serialised JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

impl Metadata {
    pub const MAX_BYTES: usize = 16 * 1024;
    /// Well within what an event may nest (metadata travels in `USER_UPDATED`).
    pub const MAX_DEPTH: usize = 32;

    pub fn into_inner(self) -> serde_json::Map<String, serde_json::Value> {
        self.0
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Metadata {
    type Error = Invalid;
    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, Invalid> {
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(Invalid::new(format!(
                "must be at most {} bytes of JSON (got {size})",
                Self::MAX_BYTES
            )));
        }
        if map
            .values()
            .any(|v| crate::json::deeper_than(v, Self::MAX_DEPTH - 1))
        {
            return Err(Invalid::new(format!(
                "must nest objects and arrays at most {} levels deep",
                Self::MAX_DEPTH
            )));
        }
        if map
            .iter()
            .any(|(k, v)| k.contains('\0') || crate::json::has_nul(v))
        {
            return Err(Invalid::new("must not contain the NUL character (U+0000)"));
        }
        Ok(Self(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_is_bounded_in_depth() {
        let nested = |levels: usize| {
            (1..levels).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
        };
        let meta = |v| serde_json::from_value::<Metadata>(serde_json::json!({ "k": v }));
        assert!(meta(nested(Metadata::MAX_DEPTH)).is_ok());
        assert!(meta(nested(Metadata::MAX_DEPTH + 1)).is_err());
    }

    proptest! {
        #[test]
        fn names_accept_exactly_1_to_100_trimmed_characters(s in "\\PC{0,120}") {
            let trimmed = s.trim();
            let expected_ok = (1..=100).contains(&trimmed.chars().count())
                && !s.chars().any(char::is_control);
            match UserName::parse(&s) {
                Ok(name) => {
                    prop_assert!(expected_ok);
                    prop_assert_eq!(name.as_ref(), trimmed);
                }
                Err(_) => prop_assert!(!expected_ok),
            }
        }

        #[test]
        fn user_ids_round_trip(bytes in any::<[u8; 16]>()) {
            let id = UserId::from(Uuid::from_bytes(bytes));
            prop_assert_eq!(UserId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC*") {
            let _ = (UserName::parse(&s), PasswordHash::parse(s.clone()), AvatarUrl::parse(s.clone()), UserId::parse(&s));
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ann ").unwrap().as_ref(), "Ann");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse("x".repeat(100)).is_ok());
        assert!(UserName::parse("x".repeat(101)).is_err());
        assert!(
            UserName::parse("ё".repeat(100)).is_ok(),
            "characters, not bytes"
        );
        assert!(UserName::parse("a\u{0}b").is_err());
        assert!(
            UserName::parse("Ann\n").is_err(),
            "a control character even at an end"
        );
        assert!(UserName::parse("\tAnn").is_err());
    }

    #[test]
    fn password_hashes_must_look_hashed() {
        assert!(PasswordHash::parse("$2b$10$abcdefghijklmnopqrstuv").is_ok());
        assert!(PasswordHash::parse("$argon2id$v=19$m=65536,t=3,p=4$abc$def").is_ok());
        assert!(PasswordHash::parse("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E").is_ok());
        assert!(PasswordHash::parse("hunter2hunter2").is_err());
        assert!(PasswordHash::parse("$2b$1").is_err());
        assert!(PasswordHash::parse(format!("$2b${}", "a".repeat(252))).is_err());
    }

    #[test]
    fn avatar_urls_are_http() {
        assert!(AvatarUrl::parse("https://cdn.example.com/a.png").is_ok());
        assert!(AvatarUrl::parse("ftp://cdn.example.com/a.png").is_err());
        assert!(AvatarUrl::parse("javascript:alert(1)").is_err());
        assert!(
            AvatarUrl::parse("https://e.com/a\u{0}b").is_err(),
            "no NUL (jsonb refuses it)"
        );
        assert!(AvatarUrl::parse(" https://e.com/a").is_err());
        assert!(AvatarUrl::parse(format!("https://e.com/{}", "a".repeat(500))).is_err());
    }

    #[test]
    fn user_ids_reject_garbage() {
        assert!(UserId::parse("not-a-uuid").is_err());
        let id = UserId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    }

    #[test]
    fn metadata_is_bounded() {
        let small = serde_json::Map::from_iter([("k".to_owned(), serde_json::json!("v"))]);
        assert!(Metadata::try_from(small).is_ok());
        let big =
            serde_json::Map::from_iter([("k".to_owned(), serde_json::json!("v".repeat(17_000)))]);
        assert!(Metadata::try_from(big).is_err());
        for nul in [
            serde_json::json!({"k": "a\u{0}b"}),
            serde_json::json!({"a\u{0}": 1}),
            serde_json::json!({"k": [{"x\u{0}": true}]}),
        ] {
            assert!(
                serde_json::from_value::<Metadata>(nul.clone()).is_err(),
                "{nul}"
            );
        }
    }
}
