//! One request type per shape of params. Several operations share a shape (a user's id, a
//! merge patch); the operation table says which operation takes which.

use std::net::IpAddr;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{
    BATCH_MAX, Flag, List, ParamForm, Params, Patch, Payment, ProfileOptions, decode, parse_ids,
    required, split_id, too_many,
};
use crate::error::{CoreError, from_json};
use crate::json::Projection;
use crate::operations::Permission;
use crate::{Email, NewUser, Timestamp, UserId};

impl Params for NewUser {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        decode(params)
    }
}

/// A user named by id, and nothing else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    pub id: UserId,
}

impl Params for UserRef {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        decode(params)
    }
}

/// `users.get`.
#[derive(Debug, Clone, Serialize)]
pub struct GetUser {
    pub id: UserId,
    #[serde(skip)]
    pub fields: Option<Projection>,
}

impl Params for GetUser {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            id: UserId,
            #[serde(default)]
            fields: List,
        }
        let p: Raw = decode(params)?;
        Ok(Self {
            id: p.id,
            fields: Projection::parse(&p.fields.0)?,
        })
    }
}

/// `users.getByEmail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetByEmail {
    pub email: Email,
    #[serde(default, deserialize_with = "flag")]
    pub include_credentials: bool,
}

impl Params for GetByEmail {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        decode(params)
    }

    fn needs(&self) -> Permission {
        match self.include_credentials {
            true => Permission::CredentialReader,
            false => Permission::Caller,
        }
    }
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Flag::deserialize(d).map(|f| f.0)
}

/// `users.recordLogin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLogin {
    pub id: UserId,
    #[serde(rename = "lastLoginAt", default)]
    pub at: Option<Timestamp>,
    #[serde(rename = "ipAddress", default)]
    pub ip: Option<IpAddr>,
}

impl Params for RecordLogin {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        decode(params)
    }
}

/// A JSON merge patch of one part of a user: every param but `id` is the patch.
#[derive(Debug, Clone, Serialize)]
pub struct MergePatch {
    pub id: UserId,
    pub patch: Patch,
}

impl Params for MergePatch {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        let (id, patch) = split_id(params)?;
        Ok(Self { id, patch })
    }
}

/// `users.getProfile`.
#[derive(Debug, Clone, Serialize)]
pub struct GetProfile {
    pub id: UserId,
    pub options: ProfileOptions,
    pub public_only: bool,
}

impl Params for GetProfile {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            id: UserId,
            #[serde(default)]
            include_preferences: Flag,
            #[serde(default)]
            include_privacy_settings: Flag,
            #[serde(default)]
            public_only: Flag,
        }
        let p: Raw = decode(params)?;
        Ok(Self {
            id: p.id,
            options: ProfileOptions {
                include_preferences: p.include_preferences.0,
                include_privacy_settings: p.include_privacy_settings.0,
            },
            public_only: p.public_only.0,
        })
    }
}

/// `users.batchProfiles`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchProfiles {
    pub ids: Vec<UserId>,
    pub options: ProfileOptions,
    #[serde(skip)]
    pub fields: Option<Projection>,
}

impl Params for BatchProfiles {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            // Optional only so that a missing list is reported by name (see `required`).
            #[serde(default)]
            user_ids: Option<List>,
            #[serde(default)]
            include_preferences: Flag,
            #[serde(default)]
            include_privacy_settings: Flag,
            #[serde(default)]
            fields: List,
        }
        let p: Raw = decode(params)?;
        Ok(Self {
            ids: parse_ids(required(p.user_ids, "userIds")?, "userIds", BATCH_MAX)?,
            options: ProfileOptions {
                include_preferences: p.include_preferences.0,
                include_privacy_settings: p.include_privacy_settings.0,
            },
            fields: Projection::parse(&p.fields.0)?,
        })
    }
}

/// `users.batchLookup`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchLookup {
    pub ids: Vec<UserId>,
    #[serde(skip)]
    pub fields: Option<Projection>,
}

impl Params for BatchLookup {
    fn parse(params: Map<String, Value>, form: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            ids: Option<List>,
            #[serde(default)]
            fields: List,
        }
        let p: Raw = decode(params)?;
        Ok(Self {
            ids: parse_ids(required(p.ids, "ids")?, "ids", form.max_ids())?,
            fields: Projection::parse(&p.fields.0)?,
        })
    }
}

/// `users.batchCreate`: each user valid or not on its own, so that one bad item does not
/// refuse the others.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct BatchCreate {
    #[serde(serialize_with = "batch_items")]
    pub users: Vec<Result<NewUser, CoreError>>,
}

impl Params for BatchCreate {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            users: Vec<Value>,
        }
        let p: Raw = decode(params)?;
        if p.users.len() > BATCH_MAX {
            return Err(too_many("users", p.users.len(), BATCH_MAX));
        }
        let users = p
            .users
            .into_iter()
            .map(|item| match item {
                Value::Object(_) => from_json::<NewUser>(item, ""),
                _ => Err(CoreError::invalid("", "must be a JSON object")),
            })
            .collect();
        Ok(Self { users })
    }

    fn writes(&self) -> usize {
        self.users.len()
    }
}

/// A refused item is kept as its error, so that a retry with the same items matches.
fn batch_items<S: Serializer>(
    users: &[Result<NewUser, CoreError>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(users.iter().map(|u| match u {
        Ok(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Err(e) => serde_json::json!({"invalid": e.body()}),
    }))
}

/// `users.recordPayment`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordPayment {
    pub id: UserId,
    #[serde(flatten)]
    pub payment: Payment,
}

impl Params for RecordPayment {
    fn parse(params: Map<String, Value>, _: ParamForm) -> Result<Self, CoreError> {
        let (id, rest) = split_id(params)?;
        Ok(Self {
            id,
            payment: decode(rest)?,
        })
    }
}
