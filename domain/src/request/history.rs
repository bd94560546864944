//! `users.history`: a user's changes, newest first, a page at a time. A page token names the
//! last entry of the page before (entries are numbered in the order they were written).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::list::{page_limit, page_token};
use super::{Count, ParamForm, Params, decode};
use crate::UserId;
use crate::error::CoreError;

/// `users.history`.
#[derive(Debug, Clone, Serialize)]
pub struct UserHistory {
    pub id: UserId,
    pub limit: u32,
    /// Where the page starts: after this entry.
    #[serde(skip)]
    pub after: Option<HistoryToken>,
}

impl Params for UserHistory {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            id: UserId,
            #[serde(default)]
            limit: Option<Count>,
            #[serde(default)]
            page_token: Option<String>,
        }
        let p: Raw = decode(params)?;
        Ok(Self {
            id: p.id,
            limit: page_limit(p.limit)?,
            after: page_token(p.page_token.as_deref(), HistoryToken::decode)?,
        })
    }
}

/// The last entry of a page: its number. Opaque to callers; any text that is not one is a
/// `VALIDATION_FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryToken(pub i64);

impl HistoryToken {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.to_be_bytes())
    }

    pub fn decode(token: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::invalid("pageToken", "is not a page token of this history");
        if token.len() > 16 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| bad())?;
        match i64::from_be_bytes(bytes) {
            n @ 1.. => Ok(Self(n)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_read_back_and_nothing_else_reads() {
        for n in [1, 42, i64::MAX] {
            assert_eq!(
                HistoryToken::decode(&HistoryToken(n).encode()).unwrap(),
                HistoryToken(n)
            );
        }
        let zero = HistoryToken(0).encode();
        let long = "A".repeat(500);
        for bad in [
            "x",
            "",
            "!!!!!!!!!!!",
            zero.as_str(),
            long.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(HistoryToken::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_read_with_bounds() {
        let parse = |v: Value| UserHistory::parse(v.as_object().unwrap().clone(), ParamForm::Query);
        let id = "6f1c1c3e-8a55-4c2e-9d7a-0a3c1f2b4d5e";
        let p = parse(json!({"id": id, "limit": "5"})).unwrap();
        assert_eq!((p.limit, p.after), (5, None));
        assert!(parse(json!({"id": id, "limit": "0"})).is_err());
        assert!(parse(json!({"id": id, "pageToken": "nope"})).is_err());
        assert!(parse(json!({"id": id, "other": 1})).is_err());
        assert!(parse(json!({"limit": 5})).is_err());
    }
}
