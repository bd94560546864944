//! The REST routes, read from the operation table ([`user_domain::operations`]): the REST edge
//! knows nothing else about operations.

use std::sync::LazyLock;

use serde_json::{Map, Value};
use user_domain::operations::{Input, OPERATIONS, Operation, Rest, Verb};
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::{CoreError, Method};
use warp::http::Method as Http;

/// The operation a path and HTTP method name, with the params the path carries.
#[derive(Debug, PartialEq)]
pub struct Route {
    pub method: Method,
    /// Its path as the operation table writes it (`/api/internal/users/{id}`).
    pub template: &'static str,
    pub path_params: Map<String, Value>,
    /// Whether the rest of the params come from the query string or a JSON body.
    pub input: &'static Input,
}

/// Every REST route, with its operation.
pub fn all() -> impl Iterator<Item = (&'static Operation, &'static Rest)> {
    OPERATIONS
        .iter()
        .flat_map(|op| op.rest.iter().map(move |r| (op, r)))
}

pub fn http(verb: Verb) -> Http {
    match verb {
        Verb::Get => Http::GET,
        Verb::Post => Http::POST,
        Verb::Patch => Http::PATCH,
        Verb::Delete => Http::DELETE,
    }
}

/// A route's path, split once: matching a request split every template again, about a
/// tenth of a warm read's CPU.
struct Template {
    path: &'static str,
    parts: Vec<Part>,
}

/// One segment of a template: `users`, or `{id}` (named `id`).
enum Part {
    Literal(&'static str),
    Param(&'static str),
}

impl Template {
    fn new(path: &'static str) -> Self {
        let parts: Vec<_> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => Part::Param(name),
                    None => Part::Literal(part),
                },
            )
            .collect();
        Self { path, parts }
    }

    /// Which segments are literal: where two templates match a path, the one with a literal
    /// where the other has a param, first from the left, wins (`/users/email/{email}` over
    /// `/users/{id}/…`), whatever their order in the table.
    fn specificity(&self) -> impl Iterator<Item = bool> {
        self.parts.iter().map(|p| matches!(p, Part::Literal(_)))
    }

    fn matches(&self, segments: &[String]) -> bool {
        self.parts.len() == segments.len()
            && (self.parts.iter().zip(segments)).all(|(part, seg)| match part {
                Part::Literal(literal) => literal == seg,
                Part::Param(_) => true,
            })
    }

    /// The path params `segments` (which it matches) carry.
    fn params(&self, segments: &[String]) -> Map<String, Value> {
        (self.parts.iter().zip(segments))
            .filter_map(|(part, seg)| match part {
                Part::Param(name) => Some(((*name).to_owned(), Value::String(seg.clone()))),
                Part::Literal(_) => None,
            })
            .collect()
    }
}

static TEMPLATES: LazyLock<Vec<Template>> =
    LazyLock::new(|| all().map(|(_, r)| Template::new(r.path)).collect());

/// The template that serves `segments` (already percent-decoded, without empty segments).
fn template(segments: &[String]) -> Option<(&'static str, Map<String, Value>)> {
    let t = TEMPLATES
        .iter()
        .filter(|t| t.matches(segments))
        .max_by(|a, b| a.specificity().cmp(b.specificity()))?;
    Some((t.path, t.params(segments)))
}

/// Finds the route for `segments` (already percent-decoded, without empty segments).
pub fn find(http_method: &Http, segments: &[String]) -> Result<Route, CoreError> {
    let (path, path_params) = template(segments).ok_or_else(|| not_found(segments))?;
    let (op, rest) = all()
        .find(|(_, r)| r.path == path && http(r.verb) == *http_method)
        .ok_or_else(|| {
            CoreError::MethodNotAllowed(cut(http_method.as_str(), QUOTE_CHARS).into_owned())
        })?;
    Ok(Route {
        method: op.method,
        template: rest.path,
        path_params,
        input: &rest.input,
    })
}

/// The HTTP methods `segments` accepts (the `Allow` header of a 405).
pub fn allowed(segments: &[String]) -> Vec<&'static str> {
    let Some((path, _)) = template(segments) else {
        return Vec::new();
    };
    all()
        .filter(|(_, r)| r.path == path)
        .map(|(_, r)| r.verb.as_str())
        .collect()
}

fn not_found(segments: &[String]) -> CoreError {
    CoreError::NotFound(format!(
        "no route /{}",
        cut(&segments.join("/"), QUOTE_CHARS)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: Http, path: &str) -> Result<Route, CoreError> {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        find(&m, &segs)
    }

    #[test]
    fn every_operation_has_a_path() {
        let cases = [
            (Http::POST, "/api/internal/users", Method::Create),
            (Http::GET, "/api/internal/users/x", Method::Get),
            (
                Http::GET,
                "/api/internal/users/email/a@b.co",
                Method::GetByEmail,
            ),
            (Http::GET, "/api/internal/users/x/exists", Method::Exists),
            (
                Http::PATCH,
                "/api/internal/users/x/last-login",
                Method::RecordLogin,
            ),
            (Http::PATCH, "/api/internal/users/x", Method::Update),
            (Http::DELETE, "/api/internal/users/x", Method::Delete),
            (Http::POST, "/api/internal/users/x/restore", Method::Restore),
            (Http::POST, "/api/internal/users/x/erase", Method::Erase),
            (Http::GET, "/api/internal/users/x/export", Method::Export),
            (Http::GET, "/api/internal/users/x/history", Method::History),
            (Http::GET, "/api/internal/users", Method::List),
            (Http::GET, "/api/internal/users/search", Method::Search),
            (
                Http::GET,
                "/api/internal/users/x/profile",
                Method::GetProfile,
            ),
            (
                Http::POST,
                "/api/internal/users/batch/profiles",
                Method::BatchProfiles,
            ),
            (Http::GET, "/api/batch/users/lookup", Method::BatchLookup),
            (Http::POST, "/api/batch/users/lookup", Method::BatchLookup),
            (Http::POST, "/api/batch/users/create", Method::BatchCreate),
            (
                Http::GET,
                "/api/internal/users/x/billing-info",
                Method::GetBillingInfo,
            ),
            (
                Http::PATCH,
                "/api/internal/users/x/billing-info",
                Method::UpdateBillingInfo,
            ),
            (
                Http::POST,
                "/api/internal/users/x/billing-stats",
                Method::RecordPayment,
            ),
            (
                Http::GET,
                "/api/internal/users/x/preferences",
                Method::GetPreferences,
            ),
            (
                Http::PATCH,
                "/api/internal/users/x/preferences",
                Method::UpdatePreferences,
            ),
            (
                Http::GET,
                "/api/internal/users/x/privacy-settings",
                Method::GetPrivacySettings,
            ),
            (
                Http::PATCH,
                "/api/internal/users/x/privacy-settings",
                Method::UpdatePrivacySettings,
            ),
        ];
        for (m, path, op) in &cases {
            assert_eq!(route(m.clone(), path).unwrap().method, *op, "{m} {path}");
        }
        let covered: std::collections::HashSet<_> = cases.iter().map(|c| c.2).collect();
        assert_eq!(covered.len(), Method::ALL.len());
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert!(matches!(
            route(Http::GET, "/api/nope"),
            Err(CoreError::NotFound(_))
        ));
        assert!(matches!(
            route(Http::PUT, "/api/internal/users/x"),
            Err(CoreError::MethodNotAllowed(_))
        ));
        // A literal segment wins over a param, whatever the table's order.
        assert_eq!(
            route(Http::GET, "/api/internal/users/email/profile")
                .unwrap()
                .method,
            Method::GetByEmail
        );
        assert_eq!(
            allowed(&["api", "internal", "users", "x"].map(str::to_owned)),
            ["GET", "PATCH", "DELETE"]
        );
        assert_eq!(
            route(Http::GET, "/api/internal/users/abc/")
                .unwrap()
                .path_params["id"],
            "abc"
        );
    }
}
