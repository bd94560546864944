//! The REST paths of contract section 3, each mapped to its operation. This table is the
//! only thing the REST edge knows about operations.

use serde_json::{Map, Value};
use user_domain::{CoreError, Method};
use warp::http::Method as Http;

/// The operation a path and HTTP method name, with the params the path carries.
#[derive(Debug, PartialEq)]
pub struct Route {
    pub method: Method,
    pub path_params: Map<String, Value>,
}

/// The HTTP methods a path accepts, and the operation each one names.
type Methods = &'static [(Http, Method)];

/// Finds the route for `segments` (already percent-decoded, without empty segments).
pub fn find(http: &Http, segments: &[String]) -> Result<Route, CoreError> {
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (methods, param): (Methods, Option<(&str, &str)>) = match segs.as_slice() {
        ["api", "internal", "users"] => (&[(Http::POST, Method::Create)], None),
        ["api", "internal", "users", "batch", "profiles"] => {
            (&[(Http::POST, Method::BatchProfiles)], None)
        }
        ["api", "internal", "users", "email", email] => {
            (&[(Http::GET, Method::GetByEmail)], Some(("email", email)))
        }
        ["api", "internal", "users", id] => (
            &[
                (Http::GET, Method::Get),
                (Http::PATCH, Method::Update),
                (Http::DELETE, Method::Delete),
            ],
            Some(("id", id)),
        ),
        ["api", "internal", "users", id, sub] => {
            let methods: Methods = match *sub {
                "exists" => &[(Http::GET, Method::Exists)],
                "last-login" => &[(Http::PATCH, Method::RecordLogin)],
                "profile" => &[(Http::GET, Method::GetProfile)],
                "billing-info" => &[
                    (Http::GET, Method::GetBillingInfo),
                    (Http::PATCH, Method::UpdateBillingInfo),
                ],
                "billing-stats" => &[(Http::POST, Method::RecordPayment)],
                "preferences" => &[
                    (Http::GET, Method::GetPreferences),
                    (Http::PATCH, Method::UpdatePreferences),
                ],
                "privacy-settings" => &[
                    (Http::GET, Method::GetPrivacySettings),
                    (Http::PATCH, Method::UpdatePrivacySettings),
                ],
                _ => return Err(not_found(segments)),
            };
            (methods, Some(("id", id)))
        }
        ["api", "batch", "users", "lookup"] => (
            &[
                (Http::GET, Method::BatchLookup),
                (Http::POST, Method::BatchLookup),
            ],
            None,
        ),
        ["api", "batch", "users", "create"] => (&[(Http::POST, Method::BatchCreate)], None),
        _ => return Err(not_found(segments)),
    };
    let method = methods
        .iter()
        .find(|(m, _)| m == http)
        .map(|(_, op)| *op)
        .ok_or_else(|| CoreError::MethodNotAllowed(http.to_string()))?;
    let path_params = param
        .map(|(k, v)| Map::from_iter([(k.to_owned(), Value::String(v.to_owned()))]))
        .unwrap_or_default();
    Ok(Route {
        method,
        path_params,
    })
}

fn not_found(segments: &[String]) -> CoreError {
    CoreError::NotFound(format!("no route /{}", segments.join("/")))
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
