//! users.get/updatePreferences and get/updatePrivacySettings: every default, deep merges that
//! emit the diff, null resetting to the default, bad values refused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{USERS, assert_invalid, new_user, outbox_events};
use crate::helpers::{TestApp, assert_error, send};

fn default_preferences() -> Value {
    json!({
        "language": "ru",
        "timezone": "Europe/Moscow",
        "theme": "auto",
        "notifications": {"email": true, "push": true, "sms": false},
        "gameSettings": {"autoDownload": false, "cloudSave": true,
                         "achievementNotifications": true, "preferredGenres": []},
        "downloadSettings": {"maxConcurrentDownloads": 3, "downloadPath": null, "autoUpdate": true}
    })
}

#[tokio::test]
async fn preferences_read_with_every_default() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "prefs@example.com").await;
    let (status, body) = app.get(&format!("{USERS}/{id}/preferences")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, default_preferences());
    let missing = uuid::Uuid::new_v4();
    let (status, err) = app.get(&format!("{USERS}/{missing}/preferences")).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}

#[tokio::test]
async fn preferences_patch_deep_merges_and_emits_the_diff() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "merge-prefs@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let patch = json!({"language": "en", "gameSettings": {"autoDownload": true}});

    let (status, body) = send(
        app.req(Method::PATCH, &path)
            .header("x-correlation-id", "req-456")
            .json(&patch),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = default_preferences();
    expected["language"] = json!("en");
    expected["gameSettings"]["autoDownload"] = json!(true);
    assert_eq!(body, expected, "siblings such as cloudSave are kept");
    assert_eq!(
        app.get(&path).await.1,
        expected,
        "the answer is what is stored"
    );

    let events = outbox_events(&app, &id, "PREFERENCES_CHANGED").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        event["data"],
        json!({"changed": ["gameSettings.autoDownload", "language"],
               "previous": {"gameSettings": {"autoDownload": false}, "language": "ru"},
               "current": {"gameSettings": {"autoDownload": true}, "language": "en"}})
    );
    assert_eq!(event["type"], "PREFERENCES_CHANGED");
    assert_eq!(event["userId"], id.as_str());
    assert_eq!(event["correlationId"], "req-456");

    // The same values again change nothing and emit nothing.
    let (status, body) = app.patch(&path, patch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, expected);
    let (status, body) = app
        .patch(
            &path,
            json!({"theme": "auto", "notifications": {"sms": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, expected);
    assert_eq!(
        outbox_events(&app, &id, "PREFERENCES_CHANGED").await.len(),
        1,
        "a no-op patch adds no event"
    );
}

#[tokio::test]
async fn preferences_null_resets_to_the_default() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "reset@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let (status, body) = app
        .patch(
            &path,
            json!({"theme": "dark", "timezone": "Asia/Tokyo",
                   "downloadSettings": {"maxConcurrentDownloads": 5, "downloadPath": "/games"},
                   "gameSettings": {"preferredGenres": ["rpg", "strategy"], "cloudSave": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["theme"], "dark");
    assert_eq!(body["downloadSettings"]["downloadPath"], "/games");
    assert_eq!(
        body["gameSettings"]["preferredGenres"],
        json!(["rpg", "strategy"])
    );

    let (status, body) = app
        .patch(
            &path,
            json!({"theme": null,
                   "downloadSettings": {"maxConcurrentDownloads": null, "downloadPath": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["theme"], "auto");
    assert_eq!(body["timezone"], "Asia/Tokyo", "untouched");
    assert_eq!(
        body["downloadSettings"],
        json!({"maxConcurrentDownloads": 3, "downloadPath": null, "autoUpdate": true})
    );
    assert_eq!(body["gameSettings"]["cloudSave"], false, "untouched");

    // null on a whole sub-object resets all of it.
    let (status, body) = app.patch(&path, json!({"gameSettings": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["gameSettings"], default_preferences()["gameSettings"]);
    assert_eq!(app.get(&path).await.1, body);
}

#[tokio::test]
async fn preferences_reject_bad_values_and_change_nothing() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "badprefs@example.com").await;
    let path = format!("{USERS}/{id}/preferences");
    let genres: Vec<String> = (0..21).map(|i| format!("genre{i}")).collect();
    for (bad, field) in [
        (json!({"theme": "neon"}), "theme"),
        (
            json!({"downloadSettings": {"maxConcurrentDownloads": 11}}),
            "downloadSettings.maxConcurrentDownloads",
        ),
        (
            json!({"downloadSettings": {"maxConcurrentDownloads": 0}}),
            "downloadSettings.maxConcurrentDownloads",
        ),
        (json!({"timezone": "Mars/Base"}), "timezone"),
        (json!({"language": "not a tag"}), "language"),
        (
            json!({"gameSettings": {"preferredGenres": genres}}),
            "gameSettings.preferredGenres",
        ),
        (
            json!({"gameSettings": {"preferredGenres": ["x".repeat(33)]}}),
            "gameSettings.preferredGenres",
        ),
        (
            json!({"gameSettings": {"turbo": true}}),
            "gameSettings.turbo",
        ),
        (json!({"fontSize": 12}), "fontSize"),
        (
            json!({"notifications": {"email": "yes"}}),
            "notifications.email",
        ),
        (json!({"gameSettings": 5}), "gameSettings"),
        (json!({"theme": 1}), "theme"),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    // A patch with a valid part and an invalid part is rejected as a whole.
    let (status, err) = app
        .patch(&path, json!({"language": "en", "theme": "neon"}))
        .await;
    assert_invalid(status, &err, "theme", &json!("partly valid"));

    assert_eq!(app.get(&path).await.1, default_preferences());
    assert!(
        outbox_events(&app, &id, "PREFERENCES_CHANGED")
            .await
            .is_empty(),
        "a rejected patch adds no event"
    );
}

#[tokio::test]
async fn privacy_settings_defaults_patch_and_validation() {
    let app = TestApp::spawn().await;
    let id = new_user(&app, "privacy@example.com").await;
    let path = format!("{USERS}/{id}/privacy-settings");
    let defaults = json!({"profileVisibility": "public", "showOnlineStatus": true,
                          "showGameActivity": true, "allowFriendRequests": true,
                          "showAchievements": true});
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, defaults);

    let (status, body) = app
        .patch(&path, json!({"profileVisibility": "friends"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = defaults.clone();
    expected["profileVisibility"] = json!("friends");
    assert_eq!(body, expected, "the full settings come back");

    let (status, body) = app.patch(&path, json!({"showOnlineStatus": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    expected["showOnlineStatus"] = json!(false);
    assert_eq!(body, expected, "other fields are kept");
    assert_eq!(app.get(&path).await.1, expected);

    for (bad, field) in [
        (
            json!({"profileVisibility": "everyone"}),
            "profileVisibility",
        ),
        (json!({"profileVisibility": "Friends"}), "profileVisibility"),
        (json!({"showAchievements": "no"}), "showAchievements"),
        (json!({"showEmail": false}), "showEmail"),
    ] {
        let (status, err) = app.patch(&path, bad.clone()).await;
        assert_invalid(status, &err, field, &bad);
    }
    assert_eq!(
        app.get(&path).await.1,
        expected,
        "rejected patches change nothing"
    );

    let missing = uuid::Uuid::new_v4();
    let (status, err) = app
        .get(&format!("{USERS}/{missing}/privacy-settings"))
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "USER_NOT_FOUND");
}
