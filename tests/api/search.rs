//! users.search: by name (prefix first, then substring; case and ё folded) or by e-mail,
//! public profiles only, privacy honoured, a page at a time, over both transports.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

const USERS: &str = "/api/internal/users";
const SEARCH: &str = "/api/internal/users/search";

async fn created(app: &TestApp, name: &str, email: &str) -> String {
    app.create_user(name, email).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn found(app: &TestApp, query: &str) -> Vec<String> {
    let (status, page) = app.get(&format!("{SEARCH}?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    names(&page)
}

#[tokio::test]
async fn a_name_finds_its_starts_first_then_its_insides_with_case_and_yo_folded() {
    let app = TestApp::spawn().await;
    for (name, email) in [
        ("Иван Федоров", "ivan@example.com"),
        ("федор Петров", "petrov@example.com"),
        ("Фёдор Иванов", "fedor@example.com"),
        ("Bob Fedorson", "bob@example.com"),
        ("Fedya", "fedya@example.com"),
        ("Zed Fedotov", "zed@example.com"),
        ("Rob0Fez", "rob@example.com"),
        ("Ole,Bo Hansen", "ole@example.com"),
    ] {
        created(&app, name, email).await;
    }
    assert_eq!(
        found(&app, "q=%D0%A4%D0%81%D0%94%D0%9E%D0%A0").await, // "ФЁДОР"
        ["Фёдор Иванов", "федор Петров", "Иван Федоров"]
    );
    assert_eq!(
        found(&app, "q=fed").await,
        ["Fedya", "Zed Fedotov", "Bob Fedorson"],
        "starts by name, then insides newest first"
    );
    assert_eq!(
        found(&app, "q=FE").await,
        ["Fedya"],
        "two letters: name starts only"
    );
    assert_eq!(
        found(&app, "q=%25").await,
        Vec::<String>::new(),
        "% is a letter"
    );

    // A page at a time, in the same order; public profiles only.
    let mut walked = Vec::new();
    let mut path = format!("{SEARCH}?q=%D1%84%D0%B5%D0%B4%D0%BE%D1%80&limit=1"); // "федор"
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for user in page["data"].as_array().unwrap() {
            assert!(
                user.get("email").is_none() && user.get("preferences").is_none(),
                "{user}"
            );
        }
        walked.extend(names(&page));
        match page["nextPageToken"].as_str() {
            Some(t) => {
                path = format!("{SEARCH}?q=%D1%84%D0%B5%D0%B4%D0%BE%D1%80&limit=1&pageToken={t}")
            }
            None => break,
        }
    }
    assert_eq!(walked, ["Фёдор Иванов", "федор Петров", "Иван Федоров"]);

    // Names containing a query are found by walking the newest users and, when the walks'
    // budgets find too few, older ones from the trigram index: the same users in the same
    // order whatever the budgets.
    let mut db = app.db().await;
    let mut inside = async |key: &str, walk: i32, further: i32| -> Vec<String> {
        sqlx::query_scalar(
            "SELECT name FROM users_search_inside($1, \
             'ffffffff-ffff-ffff-ffff-ffffffffffff', false, 10, $2, $3)",
        )
        .bind(key)
        .bind(walk)
        .bind(further)
        .fetch_all(&mut db)
        .await
        .unwrap()
    };
    for (walk, further) in [(0, 0), (1, 0), (3, 0), (3, 1), (3, 100), (100, 0)] {
        assert_eq!(
            inside("fed", walk, further).await,
            ["Zed Fedotov", "Bob Fedorson"],
            "budgets {walk}, {further}"
        );
    }
    // A query spanning two words is narrowed by the index too (its space a letter-like
    // mark there); a name holding the mark itself (`b0fe`) is not taken for it.
    assert_eq!(inside("b fe", 0, 0).await, ["Bob Fedorson"]);
    assert_eq!(inside("н фе", 0, 0).await, ["Иван Федоров"]);
    // A query without three letters, digits or marks together gives the index nothing to
    // narrow by: it is looked for in both walks, whatever the first found, and no further.
    assert_eq!(inside("e,b", 100, 0).await, ["Ole,Bo Hansen"]);
    assert_eq!(inside("e,b", 0, 100).await, ["Ole,Bo Hansen"]);
    assert_eq!(inside("e,b", 0, 0).await, Vec::<String>::new());
    assert_eq!(found(&app, "q=b%20fe").await, ["Bob Fedorson"]);

    // The previous build's call, during a rolling upgrade, still answers.
    let previous: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM users_search_inside('%fed%', 'fed', \
         'ffffffff-ffff-ffff-ffff-ffffffffffff', false, 10, 1, true)",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(previous, ["Zed Fedotov", "Bob Fedorson"]);
}

#[tokio::test]
async fn privacy_is_honoured() {
    let app = TestApp::spawn().await;
    let hidden = created(&app, "Hidden Hana", "hana@example.com").await;
    let shy = created(&app, "Shy Hanna", "hanna@example.com").await;
    created(&app, "Open Hannah", "hannah@example.com").await;
    let privacy = |id: &str| format!("{USERS}/{id}/privacy-settings");
    let (status, _) = app
        .patch(&privacy(&hidden), json!({"profileVisibility": "private"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .patch(&privacy(&shy), json!({"allowFriendRequests": false}))
        .await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(found(&app, "q=han").await, ["Open Hannah", "Shy Hanna"]);
    assert_eq!(found(&app, "q=han&purpose=friends").await, ["Open Hannah"]);
    assert_eq!(
        found(&app, "email=HANA@example.com").await,
        ["Hidden Hana"],
        "a private profile is found by its exact e-mail"
    );
    assert_eq!(
        found(&app, "email=hanna@example.com&purpose=friends").await,
        Vec::<String>::new()
    );
    assert_eq!(
        app.delete(&format!("{USERS}/{hidden}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        found(&app, "email=hana@example.com").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn hostile_params_are_refused_on_both_transports() {
    let app = TestApp::spawn().await;
    created(&app, "Someone", "someone@example.com").await;
    let long = "x".repeat(101);
    for query in [
        String::new(),
        "q=a&email=a@b.co".to_owned(),
        "q=%20%20".to_owned(),
        format!("q={long}"),
        "q=a%00b".to_owned(),
        "q=a&purpose=dating".to_owned(),
        "q=a&limit=0".to_owned(),
        "email=nope".to_owned(),
        "q=a&pageToken=!!".to_owned(),
        format!("q=a&pageToken={}", "A".repeat(5000)),
        "q=a&sort=name".to_owned(),
    ] {
        let (status, err) = app.get(&format!("{SEARCH}?{query}")).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }

    let client = app.rpc().await;
    let page = client.search(json!({"q": "some"})).await.unwrap();
    assert_eq!(names(&page), ["Someone"]);
    for bad in [json!({}), json!({"q": 5}), json!({"q": "a", "limit": 101})] {
        let err = client.search(bad.clone()).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{bad}: {err}");
    }
}
