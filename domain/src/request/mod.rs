//! The one typed request both transports decode into. An edge turns its input (path, query
//! and body, or an AMQP message) into a method name and a JSON params object; [`Request::parse`]
//! does the rest, so every rule about params lives here once.

mod params;

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use params::{Flag, List};

use crate::error::{CoreError, FieldError, from_json};
use crate::json::Projection;
use crate::{Amount, Currency, Email, NewUser, PaymentId, Timestamp, UserId};

/// The contract's operations, by their RPC method names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Create,
    Get,
    GetByEmail,
    Exists,
    RecordLogin,
    Update,
    Delete,
    GetProfile,
    BatchProfiles,
    BatchLookup,
    BatchCreate,
    GetBillingInfo,
    UpdateBillingInfo,
    RecordPayment,
    GetPreferences,
    UpdatePreferences,
    GetPrivacySettings,
    UpdatePrivacySettings,
}

impl Method {
    pub const ALL: [Method; 18] = [
        Self::Create,
        Self::Get,
        Self::GetByEmail,
        Self::Exists,
        Self::RecordLogin,
        Self::Update,
        Self::Delete,
        Self::GetProfile,
        Self::BatchProfiles,
        Self::BatchLookup,
        Self::BatchCreate,
        Self::GetBillingInfo,
        Self::UpdateBillingInfo,
        Self::RecordPayment,
        Self::GetPreferences,
        Self::UpdatePreferences,
        Self::GetPrivacySettings,
        Self::UpdatePrivacySettings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "users.create",
            Self::Get => "users.get",
            Self::GetByEmail => "users.getByEmail",
            Self::Exists => "users.exists",
            Self::RecordLogin => "users.recordLogin",
            Self::Update => "users.update",
            Self::Delete => "users.delete",
            Self::GetProfile => "users.getProfile",
            Self::BatchProfiles => "users.batchProfiles",
            Self::BatchLookup => "users.batchLookup",
            Self::BatchCreate => "users.batchCreate",
            Self::GetBillingInfo => "users.getBillingInfo",
            Self::UpdateBillingInfo => "users.updateBillingInfo",
            Self::RecordPayment => "users.recordPayment",
            Self::GetPreferences => "users.getPreferences",
            Self::UpdatePreferences => "users.updatePreferences",
            Self::GetPrivacySettings => "users.getPrivacySettings",
            Self::UpdatePrivacySettings => "users.updatePrivacySettings",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Reads change nothing; a caller may retry them freely.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Self::Get
                | Self::GetByEmail
                | Self::Exists
                | Self::GetProfile
                | Self::BatchProfiles
                | Self::BatchLookup
                | Self::GetBillingInfo
                | Self::GetPreferences
                | Self::GetPrivacySettings
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileOptions {
    pub include_preferences: bool,
    pub include_privacy_settings: bool,
}

/// A payment to add to a user's billing stats.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// One request, valid in shape; what it asks of the stored data is checked by the store.
#[derive(Debug, Clone)]
pub enum Request {
    Create(NewUser),
    Get {
        id: UserId,
        fields: Option<Projection>,
    },
    GetByEmail {
        email: Email,
        include_credentials: bool,
    },
    Exists {
        id: UserId,
    },
    RecordLogin {
        id: UserId,
        at: Option<Timestamp>,
        ip: Option<IpAddr>,
    },
    Update {
        id: UserId,
        patch: Patch,
    },
    Delete {
        id: UserId,
    },
    GetProfile {
        id: UserId,
        options: ProfileOptions,
        public_only: bool,
    },
    BatchProfiles {
        ids: Vec<UserId>,
        options: ProfileOptions,
        fields: Option<Projection>,
    },
    BatchLookup {
        ids: Vec<UserId>,
        fields: Option<Projection>,
    },
    BatchCreate {
        users: Vec<Result<NewUser, CoreError>>,
    },
    GetBillingInfo {
        id: UserId,
    },
    UpdateBillingInfo {
        id: UserId,
        patch: Patch,
    },
    RecordPayment {
        id: UserId,
        payment: Payment,
    },
    GetPreferences {
        id: UserId,
    },
    UpdatePreferences {
        id: UserId,
        patch: Patch,
    },
    GetPrivacySettings {
        id: UserId,
    },
    UpdatePrivacySettings {
        id: UserId,
        patch: Patch,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdOnly {
    id: UserId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    id: UserId,
    #[serde(default)]
    fields: List,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GetByEmailParams {
    email: Email,
    #[serde(default)]
    include_credentials: Flag,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordLoginParams {
    id: UserId,
    #[serde(default)]
    last_login_at: Option<Timestamp>,
    #[serde(default)]
    ip_address: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileParams {
    id: UserId,
    #[serde(default)]
    include_preferences: Flag,
    #[serde(default)]
    include_privacy_settings: Flag,
    #[serde(default)]
    public_only: Flag,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchProfilesParams {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLookupParams {
    #[serde(default)]
    ids: Option<List>,
    #[serde(default)]
    fields: List,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCreateParams {
    users: Vec<Value>,
}

impl Request {
    /// Most users a batch request may name.
    pub const BATCH_MAX: usize = 1000;

    pub fn parse(method: Method, params: Value, form: ParamForm) -> Result<Self, CoreError> {
        let params = match params {
            Value::Object(m) => Value::Object(m),
            Value::Null => Value::Object(Map::new()),
            _ => return Err(CoreError::invalid("params", "must be a JSON object")),
        };
        Ok(match method {
            Method::Create => Self::Create(from_json(params, "")?),
            Method::Get => {
                let p: GetParams = from_json(params, "")?;
                Self::Get {
                    id: p.id,
                    fields: Projection::parse(&p.fields.0)?,
                }
            }
            Method::GetByEmail => {
                let p: GetByEmailParams = from_json(params, "")?;
                Self::GetByEmail {
                    email: p.email,
                    include_credentials: p.include_credentials.0,
                }
            }
            Method::Exists => Self::Exists {
                id: from_json::<IdOnly>(params, "")?.id,
            },
            Method::RecordLogin => {
                let p: RecordLoginParams = from_json(params, "")?;
                Self::RecordLogin {
                    id: p.id,
                    at: p.last_login_at,
                    ip: p.ip_address,
                }
            }
            Method::Update => {
                let (id, patch) = split_id(params)?;
                Self::Update { id, patch }
            }
            Method::Delete => Self::Delete {
                id: from_json::<IdOnly>(params, "")?.id,
            },
            Method::GetProfile => {
                let p: ProfileParams = from_json(params, "")?;
                Self::GetProfile {
                    id: p.id,
                    options: ProfileOptions {
                        include_preferences: p.include_preferences.0,
                        include_privacy_settings: p.include_privacy_settings.0,
                    },
                    public_only: p.public_only.0,
                }
            }
            Method::BatchProfiles => {
                let p: BatchProfilesParams = from_json(params, "")?;
                Self::BatchProfiles {
                    ids: parse_ids(required(p.user_ids, "userIds")?, "userIds", Self::BATCH_MAX)?,
                    options: ProfileOptions {
                        include_preferences: p.include_preferences.0,
                        include_privacy_settings: p.include_privacy_settings.0,
                    },
                    fields: Projection::parse(&p.fields.0)?,
                }
            }
            Method::BatchLookup => {
                let p: BatchLookupParams = from_json(params, "")?;
                Self::BatchLookup {
                    ids: parse_ids(required(p.ids, "ids")?, "ids", form.max_ids())?,
                    fields: Projection::parse(&p.fields.0)?,
                }
            }
            Method::BatchCreate => {
                let p: BatchCreateParams = from_json(params, "")?;
                if p.users.len() > Self::BATCH_MAX {
                    return Err(too_many("users", p.users.len(), Self::BATCH_MAX));
                }
                let users = p
                    .users
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(_) => from_json::<NewUser>(item, ""),
                        _ => Err(CoreError::invalid("", "must be a JSON object")),
                    })
                    .collect();
                Self::BatchCreate { users }
            }
            Method::GetBillingInfo => Self::GetBillingInfo {
                id: from_json::<IdOnly>(params, "")?.id,
            },
            Method::UpdateBillingInfo => {
                let (id, patch) = split_id(params)?;
                Self::UpdateBillingInfo { id, patch }
            }
            Method::RecordPayment => {
                let (id, rest) = split_id(params)?;
                Self::RecordPayment {
                    id,
                    payment: from_json(Value::Object(rest), "")?,
                }
            }
            Method::GetPreferences => Self::GetPreferences {
                id: from_json::<IdOnly>(params, "")?.id,
            },
            Method::UpdatePreferences => {
                let (id, patch) = split_id(params)?;
                Self::UpdatePreferences { id, patch }
            }
            Method::GetPrivacySettings => Self::GetPrivacySettings {
                id: from_json::<IdOnly>(params, "")?.id,
            },
            Method::UpdatePrivacySettings => {
                let (id, patch) = split_id(params)?;
                Self::UpdatePrivacySettings { id, patch }
            }
        })
    }

    pub fn method(&self) -> Method {
        match self {
            Self::Create(_) => Method::Create,
            Self::Get { .. } => Method::Get,
            Self::GetByEmail { .. } => Method::GetByEmail,
            Self::Exists { .. } => Method::Exists,
            Self::RecordLogin { .. } => Method::RecordLogin,
            Self::Update { .. } => Method::Update,
            Self::Delete { .. } => Method::Delete,
            Self::GetProfile { .. } => Method::GetProfile,
            Self::BatchProfiles { .. } => Method::BatchProfiles,
            Self::BatchLookup { .. } => Method::BatchLookup,
            Self::BatchCreate { .. } => Method::BatchCreate,
            Self::GetBillingInfo { .. } => Method::GetBillingInfo,
            Self::UpdateBillingInfo { .. } => Method::UpdateBillingInfo,
            Self::RecordPayment { .. } => Method::RecordPayment,
            Self::GetPreferences { .. } => Method::GetPreferences,
            Self::UpdatePreferences { .. } => Method::UpdatePreferences,
            Self::GetPrivacySettings { .. } => Method::GetPrivacySettings,
            Self::UpdatePrivacySettings { .. } => Method::UpdatePrivacySettings,
        }
    }
}

/// Takes `id` out of the params of a PATCH operation; the rest is the merge patch.
fn split_id(params: Value) -> Result<(UserId, Patch), CoreError> {
    let Value::Object(mut map) = params else {
        return Err(CoreError::invalid("params", "must be a JSON object"));
    };
    let id = map
        .remove("id")
        .ok_or_else(|| CoreError::invalid("id", "missing field `id`"))?;
    let id = from_json::<UserId>(id, "id")?;
    Ok((id, map))
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
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b";

    fn field(r: Result<Request, CoreError>) -> String {
        r.unwrap_err()
            .details()
            .first()
            .map(|d| d.field.clone())
            .unwrap_or_default()
    }

    #[test]
    fn every_method_has_a_unique_name() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
        }
        assert_eq!(Method::parse("users.nope"), None);
    }

    #[test]
    fn malformed_uuid_is_a_validation_error() {
        assert_eq!(
            field(Request::parse(
                Method::Get,
                json!({"id": "123"}),
                ParamForm::Json
            )),
            "id"
        );
        assert_eq!(
            field(Request::parse(
                Method::Update,
                json!({"id": "x", "name": "a"}),
                ParamForm::Json
            )),
            "id"
        );
    }

    #[test]
    fn create_rejects_unknown_and_bad_fields() {
        let ok = json!({"name": "John", "email": "J@x.io", "password": "$2b$10$abcdefghijklmnop"});
        assert!(matches!(
            Request::parse(Method::Create, ok, ParamForm::Json),
            Ok(Request::Create(_))
        ));
        let extra = json!({"name": "John", "email": "j@x.io", "password": "$2b$10$abcdefghijklmnop", "role": "admin"});
        assert_eq!(
            field(Request::parse(Method::Create, extra, ParamForm::Json)),
            "role"
        );
        let bad_email =
            json!({"name": "John", "email": "nope", "password": "$2b$10$abcdefghijklmnop"});
        assert_eq!(
            field(Request::parse(Method::Create, bad_email, ParamForm::Json)),
            "email"
        );
        let wrong_type =
            json!({"name": 5, "email": "j@x.io", "password": "$2b$10$abcdefghijklmnop"});
        assert_eq!(
            field(Request::parse(Method::Create, wrong_type, ParamForm::Json)),
            "name"
        );
        assert_eq!(
            field(Request::parse(Method::Create, json!([1]), ParamForm::Json)),
            "params"
        );
    }

    #[test]
    fn batch_limits_depend_on_the_form() {
        let ids: Vec<String> = (0..101).map(|_| ID.to_owned()).collect();
        let q = json!({"ids": ids.join(",")});
        assert_eq!(
            field(Request::parse(Method::BatchLookup, q, ParamForm::Query)),
            "ids"
        );
        let j = json!({"ids": ids});
        let Ok(Request::BatchLookup { ids, .. }) =
            Request::parse(Method::BatchLookup, j, ParamForm::Json)
        else {
            panic!("101 ids in a body are fine");
        };
        assert_eq!(ids.len(), 1, "repeats kept once");
        let many: Vec<&str> = vec![ID; 1001];
        assert_eq!(
            field(Request::parse(
                Method::BatchProfiles,
                json!({"userIds": many}),
                ParamForm::Json
            )),
            "userIds"
        );
        let bad = json!({"ids": [ID, "zzz"]});
        assert_eq!(
            field(Request::parse(Method::BatchLookup, bad, ParamForm::Json)),
            "ids[1]"
        );
    }

    #[test]
    fn empty_pieces_are_bad_ids_but_ignored_fields() {
        let q = json!({"ids": format!("{ID},,{ID}")});
        assert_eq!(
            field(Request::parse(Method::BatchLookup, q, ParamForm::Query)),
            "ids[1]"
        );
        let empty = json!({"ids": ""});
        assert_eq!(
            field(Request::parse(Method::BatchLookup, empty, ParamForm::Query)),
            "ids[0]"
        );
        let f = json!({"id": ID, "fields": "name,,email"});
        assert!(Request::parse(Method::Get, f, ParamForm::Query).is_ok());
    }

    #[test]
    fn batch_create_validates_per_item() {
        let users = json!({"users": [
            {"name": "A", "email": "a@x.io", "password": "$2b$10$abcdefghijklmnop"},
            {"name": "", "email": "b@x.io", "password": "$2b$10$abcdefghijklmnop"},
            7
        ]});
        let Ok(Request::BatchCreate { users }) =
            Request::parse(Method::BatchCreate, users, ParamForm::Json)
        else {
            panic!("the batch itself is well-formed");
        };
        assert!(users[0].is_ok() && users[1].is_err() && users[2].is_err());
    }

    #[test]
    fn payments_parse_exact_amounts() {
        let p = json!({"id": ID, "paymentId": "pay-1", "amount": "199.99", "currency": "RUB"});
        let Ok(Request::RecordPayment { payment, .. }) =
            Request::parse(Method::RecordPayment, p, ParamForm::Json)
        else {
            panic!("valid payment");
        };
        assert_eq!(payment.amount.minor(), 19999);
        let neg = json!({"id": ID, "paymentId": "pay-1", "amount": -5});
        assert_eq!(
            field(Request::parse(Method::RecordPayment, neg, ParamForm::Json)),
            "amount"
        );
        let extra = json!({"id": ID, "paymentId": "p", "amount": 1, "tip": 1});
        assert_eq!(
            field(Request::parse(
                Method::RecordPayment,
                extra,
                ParamForm::Json
            )),
            "tip"
        );
    }

    #[test]
    fn query_strings_read_flags() {
        let q = json!({"id": ID, "includePreferences": "true", "publicOnly": "false"});
        let Ok(Request::GetProfile {
            options,
            public_only,
            ..
        }) = Request::parse(Method::GetProfile, q, ParamForm::Query)
        else {
            panic!("valid profile query");
        };
        assert!(options.include_preferences && !options.include_privacy_settings && !public_only);
    }

    /// Any params for any method: a request or a validation error, never a panic and never
    /// another kind of error.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// JSON built from the names and values requests use, nested a few levels.
        fn params() -> impl Strategy<Value = Value> {
            let names = prop::sample::select(vec![
                "id",
                "ids",
                "userIds",
                "fields",
                "email",
                "name",
                "password",
                "avatarUrl",
                "isActive",
                "metadata",
                "lastLoginAt",
                "ipAddress",
                "includePreferences",
                "includePrivacySettings",
                "publicOnly",
                "includeCredentials",
                "users",
                "paymentId",
                "amount",
                "currency",
                "paidAt",
                "language",
                "theme",
                "gameSettings",
                "notifications",
                "profileVisibility",
                "billingAddress",
                "paymentMethods",
                "taxId",
                "preferredGenres",
                "x",
            ]);
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                prop::sample::select(vec![
                    ID,
                    "not-a-uuid",
                    "a@b.co",
                    "$2b$10$abcdefghijklmnopqrstuv",
                    "199.99",
                    "-1",
                    "0.001",
                    "true",
                    "1,2",
                    "name,preferences.theme",
                    "",
                    "dark",
                    "2024-01-01T00:00:00.000Z",
                    "::1",
                    "RUB",
                    "card",
                    "1234567890",
                ])
                .prop_map(Value::from),
                ".{0,40}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 8, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::vec((names.clone(), inner), 0..8).prop_map(|kv| {
                        Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn never_panics(
                method in prop::sample::select(Method::ALL.to_vec()),
                params in params(),
                query in any::<bool>(),
            ) {
                let form = if query { ParamForm::Query } else { ParamForm::Json };
                if let Err(e) = Request::parse(method, params, form) {
                    prop_assert_eq!(e.code(), crate::error::ErrorCode::ValidationFailed, "{}", e);
                }
            }
        }
    }
}
