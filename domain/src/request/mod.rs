//! The typed requests both transports decode into. An edge turns its input (path, query and
//! body, or an AMQP message) into a [`Method`] and a JSON params object; [`Request::parse`]
//! does the rest, so every rule about params lives here once. Each operation's request type
//! (in [`types`]) is named in the operation table ([`crate::operations`]).

mod history;
mod list;
mod params;
mod search;
mod types;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::operations::{Method, Request};
pub use history::{HistoryToken, UserHistory};
pub use list::{Deleted, ListUsers, PAGE_DEFAULT, PAGE_MAX, PageToken};
pub use params::{Count, Flag, List};
pub use search::{
    Looking, Purpose, QUERY_MAX_CHARS, SUBSTRING_MIN_CHARS, SearchToken, SearchUsers, name_key,
};
pub use types::{
    BatchCreate, BatchLookup, BatchProfiles, GetByEmail, GetProfile, GetUser, MergePatch,
    RecordLogin, RecordPayment, UserRef,
};

use crate::error::{CoreError, FieldError, from_json};
use crate::operations::Permission;
use crate::{Amount, Currency, PaymentId, Timestamp, UserId};

/// What an operation's request type does: decode itself from params, and say when it asks
/// for more than its operation's permission. Its `Serialize` is what the ledger fingerprints
/// of a write ([`Request::content`]); reads skip what they need not keep.
pub trait Params: Sized + Serialize {
    fn parse(params: Map<String, Value>, form: ParamForm) -> Result<Self, CoreError>;

    /// A permission beyond the operation's that this request asks for.
    fn needs(&self) -> Permission {
        Permission::Caller
    }

    /// How many users it writes: a batch writes many, in one transaction that takes longer.
    fn writes(&self) -> usize {
        1
    }
}

/// Where the params came from. A query string carries at most [`ParamForm::QUERY_MAX_IDS`]
/// ids (URLs have practical length limits); a JSON body up to [`ParamForm::BODY_MAX_IDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamForm {
    Query,
    Json,
}

impl ParamForm {
    pub const QUERY_MAX_IDS: usize = 100;
    pub const BODY_MAX_IDS: usize = 1000;

    fn max_ids(self) -> usize {
        match self {
            Self::Query => Self::QUERY_MAX_IDS,
            Self::Json => Self::BODY_MAX_IDS,
        }
    }
}

/// What `users.getProfile` and `users.batchProfiles` return besides the base profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileOptions {
    pub include_preferences: bool,
    pub include_privacy_settings: bool,
}

/// A payment to add to a user's billing stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payment {
    pub payment_id: PaymentId,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::payment_amount))]
    pub amount: Amount,
    #[serde(default)]
    pub currency: Option<Currency>,
    #[serde(default)]
    pub paid_at: Option<Timestamp>,
}

/// A JSON merge patch (RFC 7396) for one sub-document of a user.
pub type Patch = Map<String, Value>;

/// Most users a batch request may name.
pub const BATCH_MAX: usize = 1000;

impl Request {
    /// Most users a batch request may name.
    pub const BATCH_MAX: usize = BATCH_MAX;
}

/// The params object; null stands for none.
pub(crate) fn object(params: Value) -> Result<Map<String, Value>, CoreError> {
    match params {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(CoreError::invalid("params", "must be a JSON object")),
    }
}

/// Params read by serde alone, every rule in the type.
fn decode<T: serde::de::DeserializeOwned>(params: Map<String, Value>) -> Result<T, CoreError> {
    from_json(Value::Object(params), "")
}

/// Takes `id` out of the params of a PATCH operation; the rest is the merge patch.
fn split_id(mut params: Map<String, Value>) -> Result<(UserId, Patch), CoreError> {
    let id = params
        .remove("id")
        .ok_or_else(|| CoreError::invalid("id", "missing field `id`"))?;
    let id = from_json::<UserId>(id, "id")?;
    Ok((id, params))
}

/// A list the method cannot do without.
fn required(list: Option<List>, field: &str) -> Result<Vec<String>, CoreError> {
    list.map(|l| l.0)
        .ok_or_else(|| CoreError::invalid(field, format!("missing field `{field}`")))
}

fn too_many(field: &str, got: usize, max: usize) -> CoreError {
    CoreError::invalid(
        field,
        format!("must hold at most {max} entries (got {got})"),
    )
}

/// Parses a batch's ids, reporting every malformed one; repeats are kept once, in order.
fn parse_ids(raw: Vec<String>, field: &str, max: usize) -> Result<Vec<UserId>, CoreError> {
    if raw.len() > max {
        return Err(too_many(field, raw.len(), max));
    }
    let mut seen = HashSet::with_capacity(raw.len());
    let mut ids = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match UserId::parse(s) {
            Ok(id) => {
                if seen.insert(id) {
                    ids.push(id);
                }
            }
            Err(e) => errors.push(FieldError::new(format!("{field}[{i}]"), e.0)),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(CoreError::invalid_all(errors))
    }
}

#[cfg(test)]
mod tests;
