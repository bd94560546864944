//! The JSON shapes of the REST edge that have no Rust type of their own (bodies read as
//! params, views built as JSON): declared here for the document only, in terms of the
//! domain types, which carry their own rules. Nothing constructs these structs.
#![allow(dead_code)]

use std::net::IpAddr;

use user_domain::{
    AvatarUrl, BillingInfo, BillingStats, BoundedText, Currency, Email, ErrorCode, FieldError,
    Genre, LanguageTag, MaxConcurrentDownloads, Metadata, NewUser, PaymentMethod,
    ProfileVisibility, Theme, TimeZone, Timestamp, UserId, UserName,
};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

mod export;
mod fields;
mod health;
mod history;

pub use export::{ErasedUser, ExportedPayment, UserExport};
pub use fields::{
    fields_body_schema, fields_schema, listed_user, partial_user, user_or_partial,
    user_with_credentials,
};
pub use health::{Integrations, Liveness, Readiness};
pub use history::HistoryEntry;

pub fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Contract section 4: `{statusCode, error, code, message, correlationId, details?}`;
/// `retryAfter` repeats the `Retry-After` header of a 429.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorBody {
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    status_code: u16,
    /// The HTTP reason phrase, e.g. `Not Found`.
    error: String,
    code: ErrorCode,
    /// What went wrong, for people; never internals.
    message: String,
    /// The request's correlation id (as in the `x-correlation-id` header).
    #[schema(min_length = 1, max_length = 128)]
    correlation_id: String,
    /// One entry per refused field (`VALIDATION_FAILED` only).
    #[schema(nullable = false)]
    details: Option<Vec<FieldError>>,
    /// Seconds to wait (`RATE_LIMITED` only).
    #[schema(nullable = false)]
    retry_after: Option<u64>,
}

/// The error body of one status: `code` narrowed to the codes that status carries.
pub fn error_for(status: u16, codes: &[ErrorCode]) -> RefOr<Schema> {
    let mut narrow = ObjectBuilder::new()
        .property(
            "statusCode",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([status])),
        )
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().map(|c| c.as_str()))),
        );
    if status == 400 {
        narrow = narrow.required("details");
    }
    if status == 429 {
        narrow = narrow.required("retryAfter");
    }
    AllOfBuilder::new()
        .item(reference("ErrorBody"))
        .item(narrow)
        .into()
}

/// `users.exists`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exists {
    exists: bool,
}

/// The body of `users.recordLogin`: both optional (`lastLoginAt` defaults to now).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordLoginBody {
    last_login_at: Option<Timestamp>,
    #[schema(schema_with = user_domain::openapi::ip_address)]
    ip_address: Option<IpAddr>,
}

/// `users.update`: a JSON merge patch (RFC 7396) of the user's editable part. `null`
/// removes a value (back to its default); `metadata` is merged key by key.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPatch {
    #[schema(nullable = false)]
    name: Option<UserName>,
    #[schema(nullable = false)]
    email: Option<Email>,
    avatar_url: Option<AvatarUrl>,
    is_active: Option<bool>,
    metadata: Option<Metadata>,
}

/// `users.updatePreferences`: a JSON merge patch of the preferences; `null` restores a
/// default.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferencesPatch {
    language: Option<LanguageTag>,
    timezone: Option<TimeZone>,
    theme: Option<Theme>,
    notifications: Option<NotificationsPatch>,
    game_settings: Option<GameSettingsPatch>,
    download_settings: Option<DownloadSettingsPatch>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationsPatch {
    email: Option<bool>,
    push: Option<bool>,
    sms: Option<bool>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GameSettingsPatch {
    auto_download: Option<bool>,
    cloud_save: Option<bool>,
    achievement_notifications: Option<bool>,
    #[schema(max_items = 20)]
    preferred_genres: Option<Vec<Genre>>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownloadSettingsPatch {
    max_concurrent_downloads: Option<MaxConcurrentDownloads>,
    download_path: Option<BoundedText<255>>,
    auto_update: Option<bool>,
}

/// `users.updatePrivacySettings`: a JSON merge patch; `null` restores a default.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrivacyPatch {
    profile_visibility: Option<ProfileVisibility>,
    show_online_status: Option<bool>,
    show_game_activity: Option<bool>,
    allow_friend_requests: Option<bool>,
    show_achievements: Option<bool>,
}

/// `users.updateBillingInfo`: a JSON merge patch of the billing info; `null` clears a field.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BillingInfoPatch {
    billing_address: Option<BoundedText<500>>,
    payment_methods: Option<Vec<PaymentMethod>>,
    currency: Option<Currency>,
    tax_id: Option<user_domain::TaxId>,
}

/// `users.getBillingInfo`, `users.updateBillingInfo` and `users.recordPayment`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BillingView {
    user_id: UserId,
    name: UserName,
    email: Email,
    billing_info: Option<BillingInfo>,
    billing_stats: BillingStats,
}

/// `users.getProfile?publicOnly=true`: what anyone may see; `createdAt` only when the
/// profile is public.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicProfile {
    id: UserId,
    name: UserName,
    avatar_url: Option<AvatarUrl>,
    profile_visibility: ProfileVisibility,
    #[schema(nullable = false)]
    created_at: Option<Timestamp>,
}

/// The body of `users.batchProfiles`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchProfilesBody {
    /// At most 1000 ids; repeats are answered once.
    #[schema(schema_with = ids_schema)]
    user_ids: Vec<UserId>,
    #[schema(nullable = false, schema_with = flag_schema)]
    include_preferences: Option<bool>,
    #[schema(nullable = false, schema_with = flag_schema)]
    include_privacy_settings: Option<bool>,
    /// Return only these fields of each user (instead of the profile).
    #[schema(nullable = false, schema_with = fields_body_schema)]
    fields: Option<Vec<String>>,
}

/// The body of `POST /api/batch/users/lookup`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchLookupBody {
    /// At most 1000 ids; repeats are answered once.
    #[schema(schema_with = ids_schema)]
    ids: Vec<UserId>,
    /// Return only these fields of each user.
    #[schema(nullable = false, schema_with = fields_body_schema)]
    fields: Option<Vec<String>>,
}

/// The body of `users.batchCreate`: each item is created, refused as a conflict or reported
/// invalid on its own (see the answer's `results`). An item that is not a valid `NewUser`
/// does not fail the request: it is answered `invalid`, and the others are still created.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateBody {
    #[schema(max_items = 1000)]
    users: Vec<NewUser>,
}

/// A flag in a body: a boolean, or the text a query string would carry.
fn flag_schema() -> Schema {
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true", "false", "1", "0", ""])),
        )
        .into()
}

/// Ids in a body: an array of at most 1000, or one comma-separated string.
fn ids_schema() -> Schema {
    let uuid = user_domain::openapi::UUID_PATTERN;
    AnyOfBuilder::new()
        .item(
            ArrayBuilder::new()
                .items(reference("UserId"))
                .max_items(Some(1000)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(format!(r"^\s*{uuid}\s*(,\s*{uuid}\s*)*$")))
                .description(Some("Comma-separated ids.")),
        )
        .description(Some("At most 1000 ids; repeats are answered once."))
        .into()
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchItemStatus {
    Created,
    Conflict,
    Invalid,
}

/// One item of a `users.batchCreate` answer, at the index it had in the request.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateResult {
    index: u32,
    status: BatchItemStatus,
    /// The new user's id (`created`).
    #[schema(nullable = false)]
    id: Option<UserId>,
    /// Why the item was not created (`conflict`, `invalid`).
    #[schema(nullable = false)]
    error: Option<ItemError>,
}

/// An item's error: `{code, message, details?}`, as in an error body.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemError {
    code: ErrorCode,
    message: String,
    #[schema(nullable = false)]
    details: Option<Vec<FieldError>>,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateStats {
    requested: u32,
    created: u32,
    conflict: u32,
    invalid: u32,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateAnswer {
    results: Vec<BatchCreateResult>,
    stats: BatchCreateStats,
}

/// Counts of distinct ids.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchStats {
    requested: u32,
    found: u32,
    missing: u32,
}

/// `{<key>: [items], missing, stats}` of the batch reads.
pub fn batch_answer(key: &str, item: RefOr<Schema>) -> Schema {
    ObjectBuilder::new()
        .property(key, ArrayBuilder::new().items(item))
        .property(
            "missing",
            ArrayBuilder::new()
                .items(reference("UserId"))
                .description(Some("Ids not found (or deleted), in the order asked.")),
        )
        .property("stats", reference("BatchStats"))
        .required(key)
        .required("missing")
        .required("stats")
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ))
        .into()
}

/// A page of a listing: `{data, nextPageToken}`.
pub fn page_answer(item: RefOr<Schema>) -> Schema {
    ObjectBuilder::new()
        .property("data", ArrayBuilder::new().items(item))
        .property(
            "nextPageToken",
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::String,
                    Type::Null,
                ]))
                .description(Some(
                    "Asks for the next page (`pageToken`); null after the last page.",
                )),
        )
        .required("data")
        .required("nextPageToken")
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
        ))
        .into()
}
