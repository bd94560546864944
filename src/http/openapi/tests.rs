//! The document against the routes, and each operation against its answers.

use super::*;
use std::collections::BTreeSet;

/// Every route is documented, every documented operation is routed, each with its
/// answers; the health paths besides.
#[test]
fn the_document_and_the_routes_agree() {
    let documented: BTreeSet<(String, String)> = documented().into_iter().collect();
    let mut routed: BTreeSet<(String, String)> = routes::all()
        .map(|(_, r)| (r.verb.as_str().to_owned(), r.path.to_owned()))
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
            let http = warp::http::Method::from_bytes(m.as_bytes()).expect("a method");
            let (op, _) = routes::all()
                .find(|(_, r)| r.verb.as_str() == m && r.path == path)
                .expect("documented paths are routed");
            let found = routes::find(&http, &segments).expect("resolves");
            assert_eq!(found.method, op.method, "{m} {path}");
        }
    }
    let covered: BTreeSet<&str> = routes::all().map(|(op, _)| op.rpc).collect();
    assert_eq!(
        covered.len(),
        user_domain::Method::ALL.len(),
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
            let params = op["parameters"].as_array().expect("parameters");
            for header in ["traceparent", "tracestate"] {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == header && p["in"] == "header"),
                    "{m} {path} takes {header}"
                );
            }
            for (status, r) in responses {
                assert!(
                    r["headers"].get("traceparent").is_some(),
                    "{m} {path} {status}"
                );
            }
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

/// The operation table names schemas by string: each name it uses is in the document.
#[test]
fn every_schema_the_table_names_exists() {
    fn refs(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                    out.insert(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(document()).expect("serialises");
    let mut found = BTreeSet::new();
    refs(&doc["paths"], &mut found);
    assert!(found.contains("#/components/schemas/UserWithCredentials"));
    for r in found {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} is not in the document"
        );
    }
}
