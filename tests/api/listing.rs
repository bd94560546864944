//! users.list: newest first, filtered, a page at a time by keyset, over both transports.

use std::collections::{HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

const USERS: &str = "/api/internal/users";

async fn created(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let user = app
            .create_user(&format!("Lister {i}"), &format!("lister{i}@example.com"))
            .await;
        ids.push(user["id"].as_str().unwrap().to_owned());
    }
    ids
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of `query` (without its `pageToken`), in order.
async fn walk(app: &TestApp, query: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let path = match &token {
            Some(t) => format!("{USERS}?{query}&pageToken={t}"),
            None => format!("{USERS}?{query}"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        match page["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return seen,
        }
    }
    panic!("the walk did not end")
}

#[tokio::test]
async fn pages_run_newest_first_and_filters_narrow_them() {
    let app = TestApp::spawn().await;
    let mut made = created(&app, 7).await;
    made.reverse();
    let (status, first) = app.get(&format!("{USERS}?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), made[..3]);
    assert_eq!(
        walk(&app, "limit=3").await,
        made,
        "every user once, newest first"
    );
    assert_eq!(walk(&app, "limit=100").await, made);

    // Filters: active or not, deleted or not, created in a window, changed since.
    let (_, u) = app
        .patch(&format!("{USERS}/{}", made[1]), json!({"isActive": false}))
        .await;
    assert_eq!(u["isActive"], false);
    assert_eq!(walk(&app, "isActive=false").await, [made[1].clone()]);
    assert_eq!(walk(&app, "isActive=true").await.len(), 6);
    let since = u["updatedAt"].as_str().unwrap();
    assert_eq!(
        walk(&app, &format!("updatedSince={since}")).await,
        [made[1].clone()]
    );

    assert_eq!(
        app.delete(&format!("{USERS}/{}", made[2])).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!walk(&app, "limit=2").await.contains(&made[2]));
    let (_, deleted) = app.get(&format!("{USERS}?deleted=deleted")).await;
    assert_eq!(ids(&deleted), [made[2].clone()]);
    assert!(deleted["data"][0]["deletedAt"].is_string(), "{deleted}");
    assert_eq!(deleted["nextPageToken"], Value::Null);
    assert_eq!(walk(&app, "deleted=both&limit=4").await, made);

    let (_, oldest) = app.get(&format!("{USERS}/{}", made[6])).await;
    let (_, newest) = app.get(&format!("{USERS}/{}", made[0])).await;
    let window = format!(
        "createdAfter={}&createdBefore={}",
        oldest["createdAt"].as_str().unwrap(),
        newest["createdAt"].as_str().unwrap()
    );
    let inside = walk(&app, &window).await;
    assert!(
        !inside.contains(&made[0]) && !inside.contains(&made[6]),
        "{inside:?}"
    );
}

#[tokio::test]
async fn a_walk_meets_each_user_that_exists_throughout_exactly_once_while_others_write() {
    let app = TestApp::spawn().await;
    let before = created(&app, 40).await;
    let doomed: HashSet<String> = before.iter().step_by(5).cloned().collect();
    let writer = {
        let app = app.twin(&[]).await;
        let (before, doomed) = (before.clone(), doomed.clone());
        tokio::spawn(async move {
            for (i, id) in before.iter().enumerate() {
                if doomed.contains(id) {
                    app.delete(&format!("{USERS}/{id}")).await;
                } else {
                    app.patch(
                        &format!("{USERS}/{id}"),
                        json!({"name": format!("Renamed {i}")}),
                    )
                    .await;
                }
                app.create_user(&format!("Newcomer {i}"), &format!("new{i}@example.com"))
                    .await;
            }
        })
    };
    let seen = walk(&app, "limit=3").await;
    writer.await.unwrap();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "a user twice: {counts:?}");
    for id in before.iter().filter(|id| !doomed.contains(*id)) {
        assert!(
            counts.contains_key(id),
            "{id} existed throughout and was not met"
        );
    }
}

#[tokio::test]
async fn hostile_params_are_refused_on_both_transports() {
    let app = TestApp::spawn().await;
    created(&app, 1).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=ten",
        "deleted=all",
        "isActive=maybe",
        "createdAfter=yesterday",
        "pageToken=AAAA",
        "pageToken=%00%ff",
        "order=asc",
    ] {
        let (status, err) = app.get(&format!("{USERS}?{query}")).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    let long = "A".repeat(10_000);
    let (status, err) = app.get(&format!("{USERS}?pageToken={long}")).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    let client = app.rpc().await;
    let page = client.list(json!({"limit": 1})).await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"limit": 1000}),
        json!({"pageToken": 5}),
        json!({"isActive": "x"}),
        json!({"deleted": null, "limit": "0"}),
    ] {
        let err = client.list(bad.clone()).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{bad}: {err}");
    }
}
