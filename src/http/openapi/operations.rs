//! What each operation documents: its tag and summary, query parameters, body, answers and
//! the error statuses it can give, with the bodies and headers those carry.

use user_domain::{ErrorCode, Method, ParamForm};
use utoipa::openapi::path::{ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Content, HeaderBuilder, RefOr, Required};
use warp::http::Method as Http;

use super::schemas::{self, reference};

/// What one operation documents besides its path and method.
pub(super) struct Doc {
    pub(super) tag: &'static str,
    pub(super) summary: &'static str,
    pub(super) query: Vec<ParameterBuilder>,
    pub(super) body: Option<RefOr<Schema>>,
    pub(super) ok: Vec<(u16, &'static str, Option<RefOr<Schema>>)>,
    /// Error statuses besides those every operation can answer.
    pub(super) errors: Vec<u16>,
}

impl Doc {
    fn new(tag: &'static str, summary: &'static str) -> Self {
        Self {
            tag,
            summary,
            query: Vec::new(),
            body: None,
            ok: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn query(mut self, p: ParameterBuilder) -> Self {
        self.query.push(p);
        self
    }

    fn body(mut self, schema: RefOr<Schema>) -> Self {
        self.body = Some(schema);
        self
    }

    fn ok(mut self, status: u16, description: &'static str, schema: Option<RefOr<Schema>>) -> Self {
        self.ok.push((status, description, schema));
        self
    }

    fn errors(mut self, statuses: &[u16]) -> Self {
        self.errors.extend_from_slice(statuses);
        self
    }
}

pub(super) fn flag(name: &str, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true", "false", "1", "0", ""]))
                .default(Some("false".into())),
        ))
}

pub(super) fn fields_param() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("fields")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .style(Some(ParameterStyle::Form))
        .explode(Some(false))
        .schema(Some(schemas::fields_schema()))
}

pub(super) fn ids_param() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("ids")
        .parameter_in(ParameterIn::Query)
        .required(Required::True)
        .style(Some(ParameterStyle::Form))
        .explode(Some(false))
        .description(Some(
            "Comma-separated user ids (at most 100 here; POST takes 1000); repeats are answered once.",
        ))
        .schema(Some(
            ArrayBuilder::new()
                .items(reference("UserId"))
                .max_items(Some(ParamForm::QUERY_MAX_IDS)),
        ))
}

/// The documentation of each operation. An exhaustive match: a new operation does not
/// compile until it is documented.
pub(super) fn doc(method: Method, http: &Http) -> Doc {
    let user = || Some(reference("User"));
    match method {
        Method::Create => Doc::new("users", "Create a user")
            .body(reference("NewUser"))
            .ok(201, "The new user", user())
            .errors(&[409]),
        Method::Get => Doc::new("users", "Read a user (its full public view, or `fields`)")
            .query(fields_param())
            .ok(200, "The user", Some(schemas::user_or_partial("User"))),
        Method::GetByEmail => Doc::new("users", "Read a user by e-mail")
            .query(flag(
                "includeCredentials",
                "Add `passwordHash` (credential readers only; 403 for others).",
            ))
            .ok(
                200,
                "The user (with `passwordHash` when asked by a credential reader)",
                Some(
                    utoipa::openapi::schema::OneOfBuilder::new()
                        .item(reference("User"))
                        .item(reference("UserWithCredentials"))
                        .into(),
                ),
            ),
        Method::Exists => Doc::new("users", "Does a user exist? (200 also when it does not)").ok(
            200,
            "Whether the user exists",
            Some(reference("Exists")),
        ),
        Method::RecordLogin => Doc::new("users", "Record a login (default: now)")
            .body(reference("RecordLoginBody"))
            .ok(200, "The updated user", user()),
        Method::Update => Doc::new(
            "users",
            "Update a user (JSON merge patch of name, email, avatarUrl, isActive, metadata)",
        )
        .body(reference("UserPatch"))
        .ok(200, "The updated user", user())
        .errors(&[409]),
        Method::Delete => Doc::new("users", "Delete a user (soft delete)").ok(204, "Deleted", None),
        Method::GetProfile => Doc::new("users", "Read a user's profile")
            .query(flag("includePreferences", "Add the preferences."))
            .query(flag("includePrivacySettings", "Add the privacy settings."))
            .query(flag(
                "publicOnly",
                "Only what anyone may see: id, name, avatarUrl, profileVisibility (and \
                 createdAt when public).",
            ))
            .ok(
                200,
                "The profile",
                Some(
                    utoipa::openapi::schema::OneOfBuilder::new()
                        .item(reference("Profile"))
                        .item(reference("PublicProfile"))
                        .into(),
                ),
            ),
        Method::BatchProfiles => Doc::new("batch", "Read many profiles")
            .body(reference("BatchProfilesBody"))
            .ok(
                200,
                "The profiles found, in the order asked, and the ids missing",
                Some(schemas::batch_answer("profiles", schemas::user_or_partial("Profile")).into()),
            ),
        Method::BatchLookup => {
            let d = Doc::new("batch", "Read many users").ok(
                200,
                "The users found, in the order asked, and the ids missing",
                Some(schemas::batch_answer("data", schemas::user_or_partial("User")).into()),
            );
            if *http == Http::GET {
                d.query(ids_param()).query(fields_param())
            } else {
                d.body(reference("BatchLookupBody"))
            }
        }
        Method::BatchCreate => Doc::new("batch", "Create many users (each item on its own)")
            .body(reference("BatchCreateBody"))
            .ok(
                200,
                "One result per item: created, conflict or invalid",
                Some(reference("BatchCreateAnswer")),
            ),
        Method::GetBillingInfo => Doc::new("billing", "Read a user's billing info and stats").ok(
            200,
            "The billing view",
            Some(reference("BillingView")),
        ),
        Method::UpdateBillingInfo => {
            Doc::new("billing", "Update a user's billing info (JSON merge patch)")
                .body(reference("BillingInfoPatch"))
                .ok(
                    200,
                    "The updated billing view",
                    Some(reference("BillingView")),
                )
        }
        Method::RecordPayment => Doc::new("billing", "Record a payment (idempotent on paymentId)")
            .body(reference("Payment"))
            .ok(
                201,
                "Recorded: the updated billing view",
                Some(reference("BillingView")),
            )
            .ok(
                200,
                "Already recorded with the same user, amount and currency: the billing view",
                Some(reference("BillingView")),
            )
            .errors(&[409]),
        Method::GetPreferences => Doc::new("settings", "Read a user's preferences").ok(
            200,
            "The preferences",
            Some(reference("Preferences")),
        ),
        Method::UpdatePreferences => {
            Doc::new("settings", "Update a user's preferences (JSON merge patch)")
                .body(reference("PreferencesPatch"))
                .ok(
                    200,
                    "The full updated preferences",
                    Some(reference("Preferences")),
                )
        }
        Method::GetPrivacySettings => Doc::new("settings", "Read a user's privacy settings").ok(
            200,
            "The privacy settings",
            Some(reference("PrivacySettings")),
        ),
        Method::UpdatePrivacySettings => Doc::new(
            "settings",
            "Update a user's privacy settings (JSON merge patch)",
        )
        .body(reference("PrivacyPatch"))
        .ok(
            200,
            "The full updated privacy settings",
            Some(reference("PrivacySettings")),
        ),
    }
}

/// The error codes each documented status carries.
pub(super) fn codes(status: u16) -> Vec<ErrorCode> {
    // Route-level answers (no such path or method) are not an operation's.
    ErrorCode::ALL
        .into_iter()
        .filter(|c| !matches!(c, ErrorCode::NotFound | ErrorCode::MethodNotAllowed))
        .filter(|c| c.status() == status)
        .collect()
}

pub(super) fn correlation_header() -> (String, utoipa::openapi::Header) {
    (
        "x-correlation-id".to_owned(),
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The request's correlation id: the caller's when it sent a valid one, else a \
                 generated one.",
            ))
            .build(),
    )
}

pub(super) fn json_response(description: &str, schema: Option<RefOr<Schema>>) -> Response {
    let (name, h) = correlation_header();
    let mut r = ResponseBuilder::new()
        .description(description)
        .header(name, h);
    if let Some(schema) = schema {
        r = r.content("application/json", Content::new(Some(schema)));
    }
    r.build()
}

pub(super) fn error_response(status: u16, what: &str) -> Response {
    let codes = codes(status);
    let listed: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let mut r = json_response(
        &format!("{what} ({})", listed.join(", ")),
        Some(schemas::error_for(status, &codes)),
    );
    if status == 429 {
        r.headers.insert(
            "Retry-After".to_owned(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    r
}

pub(super) fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Invalid input; `details` names each refused field",
        401 => "No or unknown credentials",
        403 => "The caller's address or permission does not allow this",
        404 => "No such user",
        409 => "Conflict",
        408 => {
            "The body did not all arrive within `HTTP_BODY_TIMEOUT_MS`; the connection is closed"
        }
        413 => "The body is larger than 1 MiB",
        422 => "The Idempotency-Key was used for a different request",
        429 => "Too many requests (per caller, or failed authentications per address)",
        503 => "A dependency (the database) is not answering",
        _ => "Unexpected failure (no internals are shown)",
    }
}
