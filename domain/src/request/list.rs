//! `users.list`: users newest first, a page at a time, by keyset (a page token names the last
//! user of the page before: its creation time and id, which never change), so that a walk of
//! every page meets each user that exists throughout exactly once, whatever is written
//! meanwhile.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Count, Flag, ParamForm, Params, decode};
use crate::error::CoreError;
use crate::{Timestamp, UserId};

/// Users a page holds when the caller does not say.
pub const PAGE_DEFAULT: u32 = 20;
/// The most users a page holds.
pub const PAGE_MAX: u32 = 100;

/// Which users a listing takes by their deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deleted {
    /// Those not deleted (the default).
    #[default]
    Live,
    Deleted,
    Both,
}

/// `users.list`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUsers {
    pub is_active: Option<bool>,
    pub deleted: Deleted,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Only users changed at or after this instant: a change feed.
    pub updated_since: Option<Timestamp>,
    pub limit: u32,
    /// Where the page starts: after this user.
    #[serde(skip)]
    pub after: Option<PageToken>,
}

impl Params for ListUsers {
    fn parse(mut params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        // An empty filter (`?isActive=`) filters nothing, rather than reading as `false`.
        if params.get("isActive").is_some_and(|v| v == "") {
            params.remove("isActive");
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            is_active: Option<Flag>,
            #[serde(default)]
            deleted: Deleted,
            #[serde(default)]
            created_after: Option<Timestamp>,
            #[serde(default)]
            created_before: Option<Timestamp>,
            #[serde(default)]
            updated_since: Option<Timestamp>,
            #[serde(default)]
            limit: Option<Count>,
            #[serde(default)]
            page_token: Option<String>,
        }
        let p: Raw = decode(params)?;
        let limit = page_limit(p.limit)?;
        let after = page_token(p.page_token.as_deref(), PageToken::decode)?;
        Ok(Self {
            is_active: p.is_active.map(|Flag(b)| b),
            deleted: p.deleted,
            created_after: p.created_after,
            created_before: p.created_before,
            updated_since: p.updated_since,
            limit,
            after,
        })
    }
}

/// A page's size: `limit`, else [`PAGE_DEFAULT`]; from 1 to [`PAGE_MAX`].
pub(super) fn page_limit(limit: Option<Count>) -> Result<u32, CoreError> {
    let limit = limit.map_or(PAGE_DEFAULT, |Count(n)| n);
    match (1..=PAGE_MAX).contains(&limit) {
        true => Ok(limit),
        false => Err(CoreError::invalid(
            "limit",
            format!("must be 1 to {PAGE_MAX}"),
        )),
    }
}

/// Where a page starts: after what `token` names (none, or empty: the first page).
pub(super) fn page_token<T>(
    token: Option<&str>,
    decode: fn(&str) -> Result<T, CoreError>,
) -> Result<Option<T>, CoreError> {
    match token {
        None | Some("") => Ok(None),
        Some(token) => decode(token).map(Some),
    }
}

/// The last user of a page: its creation time (to the microsecond, as stored) and id.
/// Opaque to callers; any text that is not one is a `VALIDATION_FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub created_at: DateTime<Utc>,
    pub id: UserId,
}

impl PageToken {
    const LEN: usize = 8 + 16;

    pub fn encode(&self) -> String {
        let mut bytes = [0u8; Self::LEN];
        bytes[..8].copy_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_uuid().as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::invalid("pageToken", "is not a page token of this listing");
        if token.len() > 64 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let bytes: [u8; Self::LEN] = bytes.try_into().map_err(|_| bad())?;
        let (micros, id) = bytes.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| bad())?);
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = uuid::Uuid::from_slice(id).map_err(|_| bad())?;
        Ok(Self {
            created_at,
            id: UserId::from(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(params: Value) -> Result<ListUsers, CoreError> {
        let Value::Object(map) = params else {
            unreachable!()
        };
        ListUsers::parse(map, ParamForm::Query)
    }

    #[test]
    fn a_token_reads_back_what_it_names_and_nothing_else_reads() {
        let token = PageToken {
            created_at: DateTime::from_timestamp_micros(1_733_000_000_123_456).unwrap(),
            id: UserId::from(uuid::Uuid::new_v4()),
        };
        assert_eq!(PageToken::decode(&token.encode()).unwrap(), token);
        let long = "A".repeat(5000);
        for bad in [
            "x",
            "AAAA",
            "!!!!",
            "",
            long.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(PageToken::decode(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_text_makes_decoding_panic(s in "\\PC{0,80}") {
            let _ = PageToken::decode(&s);
        }
    }

    #[test]
    fn params_read_from_text_and_json_with_bounds() {
        let q = parse(
            json!({"isActive": "false", "deleted": "both", "limit": "100",
                             "createdAfter": "2024-01-01T00:00:00Z"}),
        )
        .unwrap();
        assert_eq!(
            (q.is_active, q.deleted, q.limit),
            (Some(false), Deleted::Both, 100)
        );
        assert!(q.created_after.is_some() && q.after.is_none());
        let q = parse(json!({"isActive": ""})).unwrap();
        assert_eq!(
            (q.is_active, q.deleted, q.limit),
            (None, Deleted::Live, PAGE_DEFAULT)
        );
        for bad in [
            json!({"limit": 0}),
            json!({"limit": "101"}),
            json!({"deleted": "all"}),
            json!({"createdAfter": "yesterday"}),
            json!({"pageToken": "nope"}),
            json!({"order": "asc"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
