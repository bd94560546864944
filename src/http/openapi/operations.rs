//! What each operation documents: its tag and summary, query parameters, body, answers and
//! the error statuses it can give, with the bodies and headers those carry.

use user_domain::operations::{Input, Kind, Operation, Query, Rest, Shape};
use user_domain::{ErrorCode, ParamForm};
use utoipa::openapi::path::{
    Operation as PathOperation, OperationBuilder, ParameterBuilder, ParameterIn, ParameterStyle,
};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, HeaderBuilder, RefOr, Required};

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

/// How a route is documented, read from its operation's entry in the table.
pub(super) fn doc(op: &Operation, route: &Rest) -> Doc {
    let mut d = Doc::new(op.doc.tag, op.doc.summary);
    match &route.input {
        Input::Query(params) => {
            for q in *params {
                d = d.query(query(q));
            }
        }
        Input::Body(schema) => d = d.body(reference(schema)),
    }
    for a in op.doc.answers {
        d = d.ok(a.status, a.description, a.body.as_ref().map(shape));
    }
    d.errors(op.doc.errors)
}

fn query(q: &Query) -> ParameterBuilder {
    match q {
        Query::Flag(name, description) => flag(name, description),
        Query::Fields => fields_param(),
        Query::Ids => ids_param(),
        Query::Param(name, kind, description) => ParameterBuilder::new()
            .name(*name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(*description))
            .schema(Some(kind_schema(kind))),
    }
}

fn kind_schema(kind: &Kind) -> ObjectBuilder {
    let text = ObjectBuilder::new().schema_type(Type::String);
    match kind {
        Kind::Bool => text.enum_values(Some(["true", "false", "1", "0", ""])),
        Kind::Timestamp => text.format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        Kind::Count(max) => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(*max)),
        Kind::Text(max) => text.max_length(Some(usize::try_from(*max).unwrap_or(usize::MAX))),
        Kind::OneOf(values) => text.enum_values(Some(values.iter().copied())),
    }
}

fn shape(s: &Shape) -> RefOr<Schema> {
    match s {
        Shape::Ref(name) => reference(name),
        Shape::OneOf(names) => names
            .iter()
            .fold(OneOfBuilder::new(), |b, name| b.item(reference(name)))
            .into(),
        Shape::OrPartial(name) => schemas::user_or_partial(name),
        Shape::Batch { key, item } => {
            schemas::batch_answer(key, schemas::user_or_partial(item)).into()
        }
        Shape::Page(item) => schemas::page_answer(reference(item)).into(),
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

/// `traceparent` of every response: the service's span of the caller's trace (or of the
/// one it started).
pub(super) fn trace_header() -> (String, utoipa::openapi::Header) {
    (
        "traceparent".to_owned(),
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "W3C Trace Context: the request's trace, with the service's span as parent id.",
            ))
            .build(),
    )
}

pub(super) fn json_response(description: &str, schema: Option<RefOr<Schema>>) -> Response {
    let (name, h) = correlation_header();
    let (trace, t) = trace_header();
    let mut r = ResponseBuilder::new()
        .description(description)
        .header(name, h)
        .header(trace, t);
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

/// The operation of one of the health routes, which are not in the operation table.
pub(super) fn health(path: &str) -> PathOperation {
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
