use serde::{Deserialize, Serialize};

use super::{BoundedText, Invalid, string_newtype};

/// A user's preferences. Every field has a default, so a stored document may be sparse and
/// a read always returns the full object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Preferences {
    pub language: LanguageTag,
    pub timezone: TimeZone,
    pub theme: Theme,
    pub notifications: Notifications,
    pub game_settings: GameSettings,
    pub download_settings: DownloadSettings,
}

/// A BCP 47 language tag such as `ru`, `en-US` or `zh-Hant-TW`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct LanguageTag(String);
string_newtype!(LanguageTag);

impl LanguageTag {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        let mut parts = s.split('-');
        let primary_ok = parts.next().is_some_and(|p| {
            (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic())
        });
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if s.len() <= 35 && primary_ok && rest_ok {
            Ok(Self(s))
        } else {
            Err(Invalid::new(
                "must be a BCP 47 language tag such as 'ru' or 'en-US'",
            ))
        }
    }
}

impl Default for LanguageTag {
    fn default() -> Self {
        Self("ru".to_owned())
    }
}

/// An IANA time zone name such as `Europe/Moscow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct TimeZone(String);
string_newtype!(TimeZone);

impl TimeZone {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        match s.parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Self(tz.name().to_owned())),
            Err(_) => Err(Invalid::new(
                "must be an IANA time zone such as 'Europe/Moscow'",
            )),
        }
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self("Europe/Moscow".to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    Light,
    Dark,
    #[default]
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Notifications {
    pub email: bool,
    pub push: bool,
    pub sms: bool,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            email: true,
            push: true,
            sms: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GameSettings {
    pub auto_download: bool,
    pub cloud_save: bool,
    pub achievement_notifications: bool,
    pub preferred_genres: Genres,
}

impl Default for GameSettings {
    fn default() -> Self {
        Self {
            auto_download: false,
            cloud_save: true,
            achievement_notifications: true,
            preferred_genres: Genres::default(),
        }
    }
}

/// A genre name: 1–32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Genre(String);
string_newtype!(Genre);

impl Genre {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let text = BoundedText::<32>::parse(s)?;
        if text.as_ref().trim().is_empty() {
            return Err(Invalid::new("must not be empty"));
        }
        Ok(Self(text.into()))
    }
}

/// At most 20 genres.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Genre>")]
pub struct Genres(Vec<Genre>);

impl TryFrom<Vec<Genre>> for Genres {
    type Error = Invalid;
    fn try_from(v: Vec<Genre>) -> Result<Self, Invalid> {
        if v.len() > 20 {
            return Err(Invalid::new(format!(
                "must hold at most 20 genres (got {})",
                v.len()
            )));
        }
        Ok(Self(v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DownloadSettings {
    pub max_concurrent_downloads: MaxConcurrentDownloads,
    pub download_path: Option<BoundedText<255>>,
    pub auto_update: bool,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: MaxConcurrentDownloads(3),
            download_path: None,
            auto_update: true,
        }
    }
}

/// 1–10 parallel downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Number")]
pub struct MaxConcurrentDownloads(u8);

/// A JSON number: `2` and `2.0` are the same integer (as JSON Schema's `integer` says).
impl TryFrom<serde_json::Number> for MaxConcurrentDownloads {
    type Error = Invalid;
    fn try_from(n: serde_json::Number) -> Result<Self, Invalid> {
        let whole = n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e3)
                .map(|f| f as i64)
        });
        match whole.map(u8::try_from) {
            Some(Ok(v @ 1..=10)) => Ok(Self(v)),
            _ => Err(Invalid::new(format!(
                "must be an integer from 1 to 10 (got {n})"
            ))),
        }
    }
}

impl From<MaxConcurrentDownloads> for i64 {
    fn from(m: MaxConcurrentDownloads) -> i64 {
        m.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_a_sparse_document() {
        let p: Preferences = serde_json::from_value(json!({"theme": "dark"})).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            json!({
                "language": "ru", "timezone": "Europe/Moscow", "theme": "dark",
                "notifications": {"email": true, "push": true, "sms": false},
                "gameSettings": {"autoDownload": false, "cloudSave": true,
                                 "achievementNotifications": true, "preferredGenres": []},
                "downloadSettings": {"maxConcurrentDownloads": 3, "downloadPath": null, "autoUpdate": true}
            })
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            json!({"theme": "neon"}),
            json!({"language": "not a tag"}),
            json!({"timezone": "Mars/Olympus"}),
            json!({"downloadSettings": {"maxConcurrentDownloads": 11}}),
            json!({"downloadSettings": {"maxConcurrentDownloads": 0}}),
            json!({"downloadSettings": {"maxConcurrentDownloads": 2.5}}),
            json!({"downloadSettings": {"maxConcurrentDownloads": "2"}}),
            json!({"gameSettings": {"preferredGenres": ["x".repeat(33)]}}),
            json!({"gameSettings": {"preferredGenres": vec!["rpg"; 21]}}),
            json!({"gameSettings": {"unknown": true}}),
            json!({"notifications": {"email": "yes"}}),
        ] {
            assert!(
                serde_json::from_value::<Preferences>(bad.clone()).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn integral_floats_are_integers() {
        let p: Preferences =
            serde_json::from_value(json!({"downloadSettings": {"maxConcurrentDownloads": 2.0}}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap()["downloadSettings"]["maxConcurrentDownloads"],
            json!(2)
        );
    }

    #[test]
    fn language_tags() {
        for good in ["ru", "en-US", "zh-Hant-TW", "es-419"] {
            assert!(LanguageTag::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "r", "en_US", "en-", "-en", "toolongtag1"] {
            assert!(LanguageTag::parse(bad).is_err(), "{bad}");
        }
    }
}
