//! `users.search`: users by name (prefix, then substring) or by exact e-mail, as public
//! profiles, a page at a time. Names are compared by their search key: lower case, `ё` as
//! `е` (the column `users.name_key` holds it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::list::{page_limit, page_token};
use super::{Count, ParamForm, Params, decode};
use crate::error::CoreError;
use crate::{Email, UserId};

/// The longest name query, in characters (a name is at most this long too).
pub const QUERY_MAX_CHARS: usize = 100;
/// From this many characters a name query also matches inside names; shorter ones match
/// name starts only (a substring of one or two letters matches most of a million users).
pub const SUBSTRING_MIN_CHARS: usize = 3;

/// What a search looks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Looking {
    /// A name's search key starting with, or (from [`SUBSTRING_MIN_CHARS`]) containing, this
    /// key. Users whose profile is private are never found by name.
    Name(String),
    /// Exactly this e-mail.
    Email(Email),
}

/// Why the caller searches: `friends` leaves out users who take no friend requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Friends,
}

/// `users.search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchUsers {
    pub looking: Looking,
    pub purpose: Option<Purpose>,
    pub limit: u32,
    #[serde(skip)]
    pub after: Option<SearchToken>,
}

/// The search key of a name or a query: lower case, `ё` as `е`, as `users.name_key` holds it.
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase().replace('ё', "е")
}

impl Params for SearchUsers {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            q: Option<String>,
            #[serde(default)]
            email: Option<Email>,
            #[serde(default)]
            purpose: Option<Purpose>,
            #[serde(default)]
            limit: Option<Count>,
            #[serde(default)]
            page_token: Option<String>,
        }
        let p: Raw = decode(params)?;
        let looking = match (p.q, p.email) {
            (Some(q), None) => {
                let key = name_key(&q);
                let chars = key.chars().count();
                if chars == 0 || chars > QUERY_MAX_CHARS {
                    return Err(CoreError::invalid(
                        "q",
                        format!("must be 1 to {QUERY_MAX_CHARS} characters"),
                    ));
                }
                if key.chars().any(char::is_control) {
                    return Err(CoreError::invalid("q", "must not hold control characters"));
                }
                Looking::Name(key)
            }
            (None, Some(email)) => Looking::Email(email),
            _ => {
                return Err(CoreError::invalid(
                    "q",
                    "give either q (a name) or email, not both",
                ));
            }
        };
        Ok(Self {
            looking,
            purpose: p.purpose,
            limit: page_limit(p.limit)?,
            after: page_token(p.page_token.as_deref(), SearchToken::decode)?,
        })
    }
}

/// The last user of a page in the search's order: whether its name only contains the query
/// (rather than starting with it), its name's search key, and its id. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchToken {
    pub inside: bool,
    pub name_key: String,
    pub id: UserId,
}

impl SearchToken {
    /// A name of [`QUERY_MAX_CHARS`] characters of up to 4 bytes, the flag and the id, in
    /// base64.
    const MAX_CHARS: usize = (1 + 16 + QUERY_MAX_CHARS * 4) * 4 / 3 + 4;

    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(17 + self.name_key.len());
        bytes.push(u8::from(self.inside));
        bytes.extend_from_slice(self.id.as_uuid().as_bytes());
        bytes.extend_from_slice(self.name_key.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::invalid("pageToken", "is not a page token of this search");
        if token.len() > Self::MAX_CHARS {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let (&flag, rest) = bytes.split_first().ok_or_else(bad)?;
        if rest.len() < 16 || flag > 1 {
            return Err(bad());
        }
        let (id, name) = rest.split_at(16);
        let id = uuid::Uuid::from_slice(id).map_err(|_| bad())?;
        let name_key = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
        Ok(Self {
            inside: flag == 1,
            name_key,
            id: UserId::from(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(params: Value) -> Result<SearchUsers, CoreError> {
        let Value::Object(map) = params else {
            unreachable!()
        };
        SearchUsers::parse(map, ParamForm::Query)
    }

    #[test]
    fn keys_fold_case_and_yo() {
        assert_eq!(name_key("  Фёдор ЁЛКИН "), "федор елкин");
        assert_eq!(name_key("JOHN"), "john");
    }

    #[test]
    fn tokens_read_back_and_nothing_else_reads() {
        let token = SearchToken {
            inside: true,
            name_key: "федор".to_owned(),
            id: UserId::from(uuid::Uuid::new_v4()),
        };
        assert_eq!(SearchToken::decode(&token.encode()).unwrap(), token);
        let long = "A".repeat(SearchToken::MAX_CHARS + 1);
        for bad in ["", "x", "AAAA", "Ag", long.as_str()] {
            assert!(SearchToken::decode(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_text_makes_decoding_panic(s in "\\PC{0,200}") {
            let _ = SearchToken::decode(&s);
        }
    }

    #[test]
    fn one_of_a_name_or_an_email_within_bounds() {
        let s = parse(json!({"q": " Ёж ", "purpose": "friends", "limit": "5"})).unwrap();
        assert_eq!(s.looking, Looking::Name("еж".to_owned()));
        assert_eq!((s.purpose, s.limit), (Some(Purpose::Friends), 5));
        assert!(matches!(
            parse(json!({"email": "A@b.co"})).unwrap().looking,
            Looking::Email(_)
        ));
        for bad in [
            json!({}),
            json!({"q": "a", "email": "a@b.co"}),
            json!({"q": "   "}),
            json!({"q": "x".repeat(101)}),
            json!({"q": "a\u{0}b"}),
            json!({"q": "a", "purpose": "dating"}),
            json!({"q": "a", "limit": 0}),
            json!({"email": "nope"}),
            json!({"q": "a", "pageToken": "!"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
