//! The OpenAPI 3.1 document of the REST edge (`GET /openapi.json`) and its human page
//! (`GET /docs`, Swagger UI vendored into the binary). The paths, and each operation's
//! parameters, bodies and answers, come from the operation table ([`routes::all`],
//! [`operations::doc`]), so every route is documented and nothing else is; the schemas from
//! the domain types (feature `openapi` of `user-domain`) and [`schemas`].

mod operations;
mod schemas;

use std::sync::{Arc, LazyLock};

use user_domain::operations::{Effect, Input, Operation as Spec, Rest, Verb};
use utoipa::OpenApi;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http as HttpScheme, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi as Document, PathItem, Required, Tag};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response as HttpResponse;

use super::routes;
use operations::{doc, error_description, error_response, health, json_response};
use schemas::reference;

/// The optional headers of every operation: any value is taken, and one that breaks its rule
/// is replaced (a new correlation id, a new trace: docs/interface.md, "Trace context"), never
/// refused.
const HEADERS: [(&str, &str); 3] = [
    (
        "x-correlation-id",
        "Ties logs, replies and events of this request together; used when it is 1–128 \
         printable ASCII characters, else a new one is generated.",
    ),
    (
        "traceparent",
        "W3C Trace Context (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`): the \
         caller's trace, which the service's work continues (its response carries \
         `traceparent` with the service's span); a value that breaks the W3C rules starts a \
         new trace and is never echoed.",
    ),
    (
        "tracestate",
        "W3C Trace Context: vendor state, kept beside a valid `traceparent` (up to 512 \
         printable characters) and sent on with the service's replies and events.",
    ),
];

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
        schemas::UserExport,
        schemas::ExportedPayment,
        schemas::ErasedUser,
        schemas::HistoryEntry,
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
    components
        .schemas
        .insert("ListedUser".to_owned(), schemas::listed_user().into());
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
    for (op, route) in routes::all() {
        doc.paths.add_path_operation(
            route.path,
            vec![http_method(route.verb)],
            operation(op, route),
        );
    }
    for path in HEALTH_PATHS {
        doc.paths.paths.insert(
            path.to_owned(),
            PathItem::new(HttpMethod::Get, health(path)),
        );
    }
    doc
}

fn http_method(verb: Verb) -> HttpMethod {
    match verb {
        Verb::Get => HttpMethod::Get,
        Verb::Post => HttpMethod::Post,
        Verb::Patch => HttpMethod::Patch,
        Verb::Delete => HttpMethod::Delete,
    }
}

fn operation(spec: &Spec, route: &Rest) -> Operation {
    let d = doc(spec, route);
    let writes = spec.effect == Effect::Write;
    let has_body = d.body.is_some();
    let mut op = OperationBuilder::new()
        .operation_id(Some(operation_id(spec, route)))
        .summary(Some(d.summary))
        .description(Some(format!(
            "RPC method `{}`. {}",
            spec.rpc,
            if writes {
                "A write: a repeated `Idempotency-Key` with the same request answers as the first \
                 time."
            } else {
                "A read."
            }
        )))
        .tag(d.tag);
    for name in path_params(route.path) {
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
    for (name, description) in HEADERS {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
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
    if !path_params(route.path).is_empty() {
        errors.push(404);
    }
    if has_body {
        errors.extend([408, 413]);
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

/// The RPC method name; where an operation has a query form besides its body form (the
/// batch lookup), the query form is `<name>.query`.
fn operation_id(spec: &Spec, route: &Rest) -> String {
    match (&route.input, spec.rest.len()) {
        (Input::Query(_), 2..) => format!("{}.query", spec.rpc),
        _ => spec.rpc.to_owned(),
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
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
mod tests;
