//! The REST paths of contract section 3, each mapped to its operation. This table is the
//! only thing the REST edge knows about operations.

use serde_json::{Map, Value};
use user_domain::quote::{QUOTE_CHARS, cut};
use user_domain::{CoreError, Method};
use warp::http::Method as Http;

/// The operation a path and HTTP method name, with the params the path carries.
#[derive(Debug, PartialEq)]
pub struct Route {
    pub method: Method,
    pub path_params: Map<String, Value>,
}

/// One REST operation: its HTTP method, its path template (a `{name}` segment is a path
/// param of that name) and the operation it names. The OpenAPI document is generated from
/// this table ([`super::openapi`]), so every route is documented and nothing else is.
#[derive(Debug)]
pub struct Endpoint {
    pub http: Http,
    pub path: &'static str,
    pub method: Method,
}

const fn at(http: Http, path: &'static str, method: Method) -> Endpoint {
    Endpoint { http, path, method }
}

/// Every REST path of contract section 3. Where two templates match a path, the first
/// listed wins (`/users/email/{email}` before `/users/{id}/{…}`); the HTTP method is then
/// looked up among that template's entries (405 when it has none for it).
pub static ROUTES: [Endpoint; 19] = [
    at(Http::POST, "/api/internal/users", Method::Create),
    at(
        Http::POST,
        "/api/internal/users/batch/profiles",
        Method::BatchProfiles,
    ),
    at(
        Http::GET,
        "/api/internal/users/email/{email}",
        Method::GetByEmail,
    ),
    at(Http::GET, "/api/internal/users/{id}", Method::Get),
    at(Http::PATCH, "/api/internal/users/{id}", Method::Update),
    at(Http::DELETE, "/api/internal/users/{id}", Method::Delete),
    at(Http::GET, "/api/internal/users/{id}/exists", Method::Exists),
    at(
        Http::PATCH,
        "/api/internal/users/{id}/last-login",
        Method::RecordLogin,
    ),
    at(
        Http::GET,
        "/api/internal/users/{id}/profile",
        Method::GetProfile,
    ),
    at(
        Http::GET,
        "/api/internal/users/{id}/billing-info",
        Method::GetBillingInfo,
    ),
    at(
        Http::PATCH,
        "/api/internal/users/{id}/billing-info",
        Method::UpdateBillingInfo,
    ),
    at(
        Http::POST,
        "/api/internal/users/{id}/billing-stats",
        Method::RecordPayment,
    ),
    at(
        Http::GET,
        "/api/internal/users/{id}/preferences",
        Method::GetPreferences,
    ),
    at(
        Http::PATCH,
        "/api/internal/users/{id}/preferences",
        Method::UpdatePreferences,
    ),
    at(
        Http::GET,
        "/api/internal/users/{id}/privacy-settings",
        Method::GetPrivacySettings,
    ),
    at(
        Http::PATCH,
        "/api/internal/users/{id}/privacy-settings",
        Method::UpdatePrivacySettings,
    ),
    at(Http::GET, "/api/batch/users/lookup", Method::BatchLookup),
    at(Http::POST, "/api/batch/users/lookup", Method::BatchLookup),
    at(Http::POST, "/api/batch/users/create", Method::BatchCreate),
];

/// The path params of `template` read from `segments`, or `None` when it does not match.
fn matches(template: &str, segments: &[String]) -> Option<Map<String, Value>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Map::new();
    for (part, seg) in parts.iter().zip(segments) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                params.insert(name.to_owned(), Value::String(seg.clone()));
            }
            None if part == seg => {}
            None => return None,
        }
    }
    Some(params)
}

/// Finds the route for `segments` (already percent-decoded, without empty segments).
pub fn find(http: &Http, segments: &[String]) -> Result<Route, CoreError> {
    let (template, path_params) = ROUTES
        .iter()
        .find_map(|e| matches(e.path, segments).map(|p| (e.path, p)))
        .ok_or_else(|| not_found(segments))?;
    let method = ROUTES
        .iter()
        .find(|e| e.path == template && e.http == *http)
        .map(|e| e.method)
        .ok_or_else(|| CoreError::MethodNotAllowed(cut(http.as_str(), QUOTE_CHARS).into_owned()))?;
    Ok(Route {
        method,
        path_params,
    })
}

/// The HTTP methods `segments` accepts (the `Allow` header of a 405).
pub fn allowed(segments: &[String]) -> Vec<&'static Http> {
    let template = ROUTES
        .iter()
        .find(|e| matches(e.path, segments).is_some())
        .map(|e| e.path);
    ROUTES
        .iter()
        .filter(|e| Some(e.path) == template)
        .map(|e| &e.http)
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
        assert_eq!(
            route(Http::GET, "/api/internal/users/abc/")
                .unwrap()
                .path_params["id"],
            "abc"
        );
    }
}
