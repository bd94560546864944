//! The OpenAPI document against the real service: the checker each answer goes through (its
//! status documented, its body valid against the documented schema, the documented headers
//! present) and the docs page. Every operation is driven through it in `operations`.

use std::collections::BTreeSet;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

mod operations;

/// The document and the answers checked against it.
struct Checker {
    doc: Value,
    /// (METHOD, path template, status) of every answer validated.
    seen: BTreeSet<(String, String, u16)>,
}

/// One answer as it came.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Value>,
}

impl Checker {
    async fn new(app: &TestApp) -> Self {
        let resp = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .expect("document fetched");
        assert_eq!(resp.status(), StatusCode::OK, "served without credentials");
        assert_eq!(
            resp.headers()[CONTENT_TYPE],
            "application/json",
            "a JSON document"
        );
        let doc: Value = resp.json().await.expect("JSON document");
        assert_eq!(doc["openapi"], "3.1.0");
        Self {
            doc,
            seen: BTreeSet::new(),
        }
    }

    /// Sends a request and checks its answer against the document's `template` entry.
    async fn call(
        &mut self,
        req: reqwest::RequestBuilder,
        method: &Method,
        template: &str,
    ) -> Answer {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = (!bytes.is_empty()).then(|| {
            serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|e| panic!("{method} {template} {status}: not JSON: {e}"))
        });
        let answer = Answer {
            status,
            headers,
            body,
        };
        self.check(method, template, &answer);
        answer
    }

    fn check(&mut self, method: &Method, template: &str, answer: &Answer) {
        let what = format!("{method} {template} {}", answer.status);
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{what}: operation not documented");
        let documented = &op["responses"][answer.status.as_str()];
        assert!(documented.is_object(), "{what}: status not documented");
        assert!(
            answer.headers.contains_key("x-correlation-id"),
            "{what}: no x-correlation-id"
        );
        if let Some(headers) = documented["headers"].as_object() {
            for name in headers.keys() {
                assert!(
                    answer.headers.contains_key(name.as_str()),
                    "{what}: documented header {name} missing"
                );
            }
        }
        let content = &documented["content"];
        match (&answer.body, content.get("application/json")) {
            (Some(body), Some(media)) => {
                assert_eq!(
                    answer.headers[CONTENT_TYPE], "application/json",
                    "{what}: content type"
                );
                self.validate(&media["schema"], body, &what);
            }
            (None, None) => assert!(content.is_null(), "{what}: an empty body documented"),
            (Some(body), None) => panic!("{what}: undocumented body {body}"),
            (None, Some(_)) => panic!("{what}: documented body missing"),
        }
        self.seen.insert((
            method.to_string(),
            template.to_owned(),
            answer.status.as_u16(),
        ));
    }

    /// Validates `body` against `schema`, resolving `$ref`s within the document.
    fn validate(&self, schema: &Value, body: &Value, what: &str) {
        let errors = self.errors(schema, body, what);
        assert!(errors.is_empty(), "{what}: {errors:#?}\nbody: {body}");
    }

    fn errors(&self, schema: &Value, body: &Value, what: &str) -> Vec<String> {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// The validation is not vacuous: answers the document does not describe fail it.
    fn refuses_what_it_should(&self) {
        let user = json!({"$ref": "#/components/schemas/User"});
        for wrong in [
            json!({"id": "not-a-uuid"}),
            json!({"id": "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b", "passwordHash": "x"}),
            json!([]),
        ] {
            assert!(
                !self.errors(&user, &wrong, "self-check").is_empty(),
                "{wrong}"
            );
        }
        let error = json!({"$ref": "#/components/schemas/ErrorBody"});
        let leaky = json!({"statusCode": 500, "error": "x", "code": "INTERNAL", "message": "m",
                           "correlationId": "c", "stack": "at main.rs"});
        assert!(!self.errors(&error, &leaky, "self-check").is_empty());
    }
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "the Swagger UI page");
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("initializer");
    assert_eq!(init.status(), StatusCode::OK);
    assert!(
        init.text().await.expect("js").contains("/openapi.json"),
        "the page loads this service's document"
    );
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("bundle");
    assert_eq!(
        bundle.status(),
        StatusCode::OK,
        "assets come from the binary"
    );
    let (status, _) = crate::helpers::send(app.client.post(app.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
