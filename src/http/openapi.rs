//! The OpenAPI 3.1 document of the REST edge (`GET /openapi.json`) and its human page
//! (`GET /docs`, Swagger UI vendored into the binary). The paths come from the route table
//! ([`routes::ROUTES`]), so every route is documented and nothing else is; each operation's
//! parameters, bodies and answers from [`operation`], an exhaustive match on the operation;
//! the schemas from the domain types (feature `openapi` of `user-domain`) and [`schemas`].

mod schemas;

use std::sync::{Arc, LazyLock};

use user_domain::{ErrorCode, Method, ParamForm};
use utoipa::OpenApi;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, ParameterStyle,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http as HttpScheme, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    Content, HeaderBuilder, OpenApi as Document, PathItem, RefOr, Required, Tag,
};
use warp::http::{HeaderValue, Method as Http, StatusCode, header};
use warp::reply::Response as HttpResponse;

use super::routes::{self, Endpoint};
use schemas::reference;

/// The unauthenticated paths besides the operations.
pub const HEALTH_PATHS: [&str; 4] = [
    "/health",
    "/health/ready",
    "/health/integrations",
    "/metrics",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "user-service",
        description = "User records of the gaming platform over REST (the same operations as \
                       the RabbitMQ RPC of the contract). Every response carries \
                       `x-correlation-id`; errors have the body `ErrorBody`.",
    ),
    components(schemas(
        schemas::ErrorBody,
        user_domain::User,
        user_domain::NewUser,
        user_domain::views::Profile,
        user_domain::request::Payment,
        user_domain::PasswordHash,
        user_domain::openapi::MetadataValue,
        schemas::Exists,
        schemas::RecordLoginBody,
        schemas::UserPatch,
        schemas::PreferencesPatch,
        schemas::PrivacyPatch,
        schemas::BillingInfoPatch,
        schemas::BillingView,
        schemas::PublicProfile,
        schemas::BatchProfilesBody,
        schemas::BatchLookupBody,
        schemas::BatchCreateBody,
        schemas::BatchCreateAnswer,
        schemas::BatchStats,
        schemas::Liveness,
        schemas::Readiness,
        schemas::Integrations,
        user_domain::Preferences,
        user_domain::PrivacySettings,
    ))
)]
struct Base;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(build);
    &DOC
}

/// The document as JSON text, rendered once.
fn document_json() -> &'static [u8] {
    static JSON: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec_pretty(document()).unwrap_or_default());
    &JSON
}

fn build() -> Document {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.tags = Some(vec![
        Tag::new("users"),
        Tag::new("batch"),
        Tag::new("billing"),
        Tag::new("settings"),
        Tag::new("health"),
    ]);
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("PartialUser".to_owned(), schemas::partial_user().into());
    components.schemas.insert(
        "UserWithCredentials".to_owned(),
        schemas::user_with_credentials().into(),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpScheme::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A caller's API key as `Authorization: Bearer <key>`."))
                .build(),
        ),
    );
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "A caller's API key (`INTERNAL_API_KEYS`).",
        ))),
    );
    components.add_security_scheme(
        "internalService",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-internal-service",
            "The shared internal secret (`INTERNAL_SERVICE_SECRET`), with `x-service-name`.",
        ))),
    );
    components.add_security_scheme(
        "serviceName",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-service-name",
            "The calling service's name, sent with `x-internal-service`.",
        ))),
    );
    for e in &routes::ROUTES {
        doc.paths
            .add_path_operation(e.path, vec![http_method(&e.http)], operation(e));
    }
    for path in HEALTH_PATHS {
        doc.paths.paths.insert(
            path.to_owned(),
            PathItem::new(HttpMethod::Get, health(path)),
        );
    }
    doc
}

fn http_method(m: &Http) -> HttpMethod {
    match *m {
        Http::POST => HttpMethod::Post,
        Http::PATCH => HttpMethod::Patch,
        Http::DELETE => HttpMethod::Delete,
        Http::PUT => HttpMethod::Put,
        _ => HttpMethod::Get,
    }
}

/// What one operation documents besides its path and method.
struct Doc {
    tag: &'static str,
    summary: &'static str,
    query: Vec<ParameterBuilder>,
    body: Option<RefOr<Schema>>,
    ok: Vec<(u16, &'static str, Option<RefOr<Schema>>)>,
    /// Error statuses besides those every operation can answer.
    errors: Vec<u16>,
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

fn flag(name: &str, description: &str) -> ParameterBuilder {
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

fn fields_param() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("fields")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .style(Some(ParameterStyle::Form))
        .explode(Some(false))
        .schema(Some(schemas::fields_schema()))
}

fn ids_param() -> ParameterBuilder {
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
fn doc(method: Method, http: &Http) -> Doc {
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
fn codes(status: u16) -> Vec<ErrorCode> {
    [
        ErrorCode::ValidationFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::UserNotFound,
        ErrorCode::EmailTaken,
        ErrorCode::Conflict,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ]
    .into_iter()
    .filter(|c| c.status() == status)
    .collect()
}

fn correlation_header() -> (String, utoipa::openapi::Header) {
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

fn json_response(description: &str, schema: Option<RefOr<Schema>>) -> Response {
    let (name, h) = correlation_header();
    let mut r = ResponseBuilder::new()
        .description(description)
        .header(name, h);
    if let Some(schema) = schema {
        r = r.content("application/json", Content::new(Some(schema)));
    }
    r.build()
}

fn error_response(status: u16, what: &str) -> Response {
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

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Invalid input; `details` names each refused field",
        401 => "No or unknown credentials",
        403 => "The caller's address or permission does not allow this",
        404 => "No such user",
        409 => "Conflict",
        413 => "The body is larger than 1 MiB",
        422 => "The Idempotency-Key was used for a different request",
        429 => "Too many requests (per caller, or failed authentications per address)",
        503 => "A dependency (the database) is not answering",
        _ => "Unexpected failure (no internals are shown)",
    }
}

fn operation(e: &Endpoint) -> Operation {
    let d = doc(e.method, &e.http);
    let writes = !e.method.is_read();
    let has_body = d.body.is_some();
    let mut op = OperationBuilder::new()
        .operation_id(Some(operation_id(e)))
        .summary(Some(d.summary))
        .description(Some(format!(
            "RPC method `{}`. {}",
            e.method,
            if writes {
                "A write: a repeated `Idempotency-Key` with the same request answers as the first \
                 time."
            } else {
                "A read."
            }
        )))
        .tag(d.tag);
    for name in path_params(e.path) {
        let (schema, description) = match name {
            "email" => (reference("Email"), "The user's e-mail address"),
            _ => (
                reference("UserId"),
                "The user's id (a malformed one is a 400)",
            ),
        };
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(schema)),
        );
    }
    for q in d.query {
        op = op.parameter(q);
    }
    op = op.parameter(
        ParameterBuilder::new()
            .name("x-correlation-id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Ties logs, replies and events of this request together; used when it is 1–128 \
                 printable ASCII characters, else a new one is generated.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
    );
    if writes {
        op = op.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: the same key with the same request answers as the first \
                     time (409 while the first is still running, 422 with different content).",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[!-~]{1,128}$")),
                )),
        );
    }
    if let Some(body) = d.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", Content::new(Some(body)))
                .build(),
        ));
    }
    for (status, description, schema) in d.ok {
        op = op.response(status.to_string(), json_response(description, schema));
    }
    let mut errors = vec![400, 401, 403, 429, 500, 503];
    if !path_params(e.path).is_empty() {
        errors.push(404);
    }
    if has_body {
        errors.push(413);
    }
    if writes {
        errors.extend([409, 422]);
    }
    errors.extend(d.errors);
    errors.sort_unstable();
    errors.dedup();
    for status in errors {
        op = op.response(
            status.to_string(),
            error_response(status, error_description(status)),
        );
    }
    op = op
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
        .security(SecurityRequirement::new("apiKey", Vec::<String>::new()))
        .security(
            SecurityRequirement::new("internalService", Vec::<String>::new())
                .add("serviceName", Vec::<String>::new()),
        );
    op.build()
}

/// `users.get`; the GET form of the batch lookup is `users.batchLookup.query`.
fn operation_id(e: &Endpoint) -> String {
    if e.method == Method::BatchLookup && e.http == Http::GET {
        format!("{}.query", e.method)
    } else {
        e.method.to_string()
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn health(path: &str) -> Operation {
    let (summary, ok, body): (&str, &str, Option<RefOr<Schema>>) = match path {
        "/health" => (
            "Liveness (never touches the database)",
            "Alive; `status` is `degraded` while an integration or actor is not well",
            Some(reference("Liveness")),
        ),
        "/health/ready" => (
            "Readiness: 503 until the database answers",
            "Ready",
            Some(reference("Readiness")),
        ),
        "/health/integrations" => (
            "Each integration's state and figures (always 200)",
            "The report",
            Some(reference("Integrations")),
        ),
        _ => (
            "Prometheus metrics",
            "The metrics in the Prometheus text format",
            None,
        ),
    };
    let mut op = OperationBuilder::new()
        .operation_id(Some(format!("health{}", path.replace('/', "."))))
        .summary(Some(summary))
        .tag("health")
        .securities(Some(Vec::<SecurityRequirement>::new()));
    let response = match body {
        Some(schema) => json_response(ok, Some(schema)),
        None => ResponseBuilder::new()
            .description(ok)
            .content(
                "text/plain",
                Content::new(Some(ObjectBuilder::new().schema_type(Type::String))),
            )
            .build(),
    };
    op = op.response("200", response);
    if path == "/health/ready" {
        op = op.response("503", error_response(503, error_description(503)));
    }
    op.build()
}

/// `GET /openapi.json`.
pub fn json() -> HttpResponse {
    let mut r = HttpResponse::new(document_json().into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /docs` and its assets (Swagger UI, served from the binary).
pub fn docs(path: &str) -> Option<HttpResponse> {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
        LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")));
    let rest = path.strip_prefix("/docs")?;
    if rest.is_empty() {
        let mut r = HttpResponse::new(Default::default());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/docs/"));
        return Some(r);
    }
    let file = rest.strip_prefix('/')?;
    let file = if file.is_empty() { "index.html" } else { file };
    let found = utoipa_swagger_ui::serve(file, CONFIG.clone())
        .ok()
        .flatten()?;
    let mut r = HttpResponse::new(found.bytes.into_owned().into());
    if let Ok(v) = HeaderValue::from_str(&found.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Some(r)
}

/// Every documented operation as (METHOD, path) (the tests compare it with the routes).
pub fn documented() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &document().paths.paths {
        for (m, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("PUT", &item.put),
        ] {
            if op.is_some() {
                out.push((m.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every route is documented, every documented operation is routed, each with its
    /// answers; the health paths besides.
    #[test]
    fn the_document_and_the_routes_agree() {
        let documented: BTreeSet<(String, String)> = documented().into_iter().collect();
        let mut routed: BTreeSet<(String, String)> = routes::ROUTES
            .iter()
            .map(|e| (e.http.to_string(), e.path.to_owned()))
            .collect();
        routed.extend(
            HEALTH_PATHS
                .iter()
                .map(|p| ("GET".to_owned(), p.to_string())),
        );
        assert_eq!(documented, routed);
        for (m, path) in &documented {
            // A documented path resolves to the route it documents.
            if path.starts_with("/api/") {
                let segments: Vec<String> = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if s.starts_with('{') {
                            "x".to_owned()
                        } else {
                            s.to_owned()
                        }
                    })
                    .collect();
                let http = Http::from_bytes(m.as_bytes()).expect("a method");
                assert!(routes::find(&http, &segments).is_ok(), "{m} {path}");
            }
        }
        let covered: BTreeSet<&str> = routes::ROUTES.iter().map(|e| e.method.as_str()).collect();
        assert_eq!(
            covered.len(),
            Method::ALL.len(),
            "every operation has a route"
        );
    }

    #[test]
    fn every_operation_documents_its_answers() {
        let doc = serde_json::to_value(document()).expect("serialises");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for (m, path) in documented() {
            let op = &doc["paths"][&path][m.to_lowercase()];
            assert!(
                ids.insert(op["operationId"].to_string()),
                "unique id: {m} {path}"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{m} {path} has a success"
            );
            if path.starts_with("/api/") {
                for status in ["400", "401", "403", "429", "503"] {
                    assert!(responses.contains_key(status), "{m} {path} {status}");
                }
                assert!(
                    responses["429"]["headers"].get("Retry-After").is_some(),
                    "{m} {path}"
                );
                assert_eq!(op["security"].as_array().map(Vec::len), Some(3));
            } else {
                assert_eq!(op["security"], serde_json::json!([]), "{path} is open");
            }
            for (status, r) in responses {
                assert!(
                    r["headers"].get("x-correlation-id").is_some() || path == "/metrics",
                    "{m} {path} {status}"
                );
            }
        }
        // Every $ref points at a component.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap_or_default();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
