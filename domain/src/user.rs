use std::net::IpAddr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize, Serializer};

use super::{
    AvatarUrl, BillingInfo, BillingStats, Email, Metadata, PasswordHash, Preferences,
    PrivacySettings, Timestamp, UserId, UserName,
};
use crate::json::DefaultJson;

/// One user with every default filled in: exactly the full public view (the JSON of
/// `users.get`), which is also what the cache holds. The password hash is not part of it;
/// it is read from the database, and only for credential readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: UserName,
    pub avatar_url: Option<AvatarUrl>,
    pub is_active: bool,
    pub last_login_at: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::ip_address))]
    pub last_login_ip: Option<IpAddr>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(serialize_with = "preferences")]
    pub preferences: Preferences,
    #[serde(serialize_with = "privacy_settings")]
    pub privacy_settings: PrivacySettings,
    pub billing_info: Option<BillingInfo>,
    pub billing_stats: BillingStats,
    pub metadata: Metadata,
}

static PREFERENCES: LazyLock<DefaultJson<Preferences>> = LazyLock::new(DefaultJson::new);
static PRIVACY_SETTINGS: LazyLock<DefaultJson<PrivacySettings>> = LazyLock::new(DefaultJson::new);

fn preferences<S: Serializer>(value: &Preferences, s: S) -> Result<S::Ok, S::Error> {
    PREFERENCES.write(value, s)
}

fn privacy_settings<S: Serializer>(value: &PrivacySettings, s: S) -> Result<S::Ok, S::Error> {
    PRIVACY_SETTINGS.write(value, s)
}

/// The body of `users.create` (and each item of `users.batchCreate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: UserName,
    pub email: Email,
    /// Already hashed by the caller.
    pub password: PasswordHash,
}

/// The part of a user that `users.update` may change. A merge patch is applied to this
/// document and the result deserialised again, so every rule holds after the merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditableUser {
    pub name: UserName,
    pub email: Email,
    #[serde(default)]
    pub avatar_url: Option<AvatarUrl>,
    #[serde(default = "active_by_default")]
    pub is_active: bool,
    #[serde(default)]
    pub metadata: Metadata,
}

fn active_by_default() -> bool {
    true
}

impl From<&User> for EditableUser {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            email: u.email.clone(),
            avatar_url: u.avatar_url.clone(),
            is_active: u.is_active,
            metadata: u.metadata.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The cache stores users as their public JSON and reads them back: that must be lossless.
    #[test]
    fn the_public_view_reads_back_as_the_same_user() {
        let view = json!({
            "id": "01a211f3-41bb-7284-a5f7-560fc46c90f7",
            "email": "gamer@example.com",
            "name": "Gamer One",
            "avatarUrl": "https://cdn.example.com/a.png",
            "isActive": false,
            "lastLoginAt": "2024-01-01T10:00:00.000Z",
            "lastLoginIp": "2001:db8::1",
            "createdAt": "2023-12-31T23:59:59.999Z",
            "updatedAt": "2024-01-02T00:00:00.000Z",
            "preferences": {
                "language": "en", "timezone": "Europe/Berlin", "theme": "dark",
                "notifications": {"email": false, "push": true, "sms": true},
                "gameSettings": {"autoDownload": true, "cloudSave": false,
                    "achievementNotifications": false, "preferredGenres": ["rpg", "action"]},
                "downloadSettings": {"maxConcurrentDownloads": 5,
                    "downloadPath": "/games", "autoUpdate": false}
            },
            "privacySettings": {"profileVisibility": "friends", "showOnlineStatus": false,
                "showGameActivity": true, "allowFriendRequests": false, "showAchievements": true},
            "billingInfo": {"billingAddress": "Москва", "paymentMethods": ["card"],
                "currency": "RUB", "taxId": "123456789012"},
            "billingStats": {"lastPaymentAt": "2024-01-01T00:00:00.000Z",
                "totalSpent": "1234.50", "paymentsCount": 3},
            "metadata": {"source": "import", "tags": [1, 2]}
        });
        let user: User = serde_json::from_value(view.clone()).unwrap();
        assert_eq!(serde_json::to_value(&user).unwrap(), view);
        let mut extra = view;
        extra["passwordHash"] = json!("$2b$10$abcdefghijklmnopqrstuv");
        assert!(
            serde_json::from_value::<User>(extra).is_err(),
            "unknown fields are refused"
        );
    }

    /// Settings equal to the defaults are written from a text written once: the same JSON,
    /// on every serializer (to text, to a value, inside a flattened struct).
    #[test]
    fn default_settings_are_written_as_any_other() {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            user: &'a User,
            extra: u8,
        }
        let mut user: User = serde_json::from_value(json!({
            "id": "01a211f3-41bb-7284-a5f7-560fc46c90f7", "email": "a@example.com",
            "name": "A", "avatarUrl": null, "isActive": true, "lastLoginAt": null,
            "lastLoginIp": null, "createdAt": "2023-12-31T23:59:59.999Z",
            "updatedAt": "2023-12-31T23:59:59.999Z", "preferences": {},
            "privacySettings": {}, "billingInfo": null,
            "billingStats": {"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0},
            "metadata": {}
        }))
        .unwrap();
        for changed in [false, true] {
            if changed {
                user.preferences.theme = crate::Theme::Dark;
                user.privacy_settings.show_online_status = false;
            }
            let expected = json!({
                "preferences": serde_json::to_value(&user.preferences).unwrap(),
                "privacySettings": serde_json::to_value(&user.privacy_settings).unwrap(),
            });
            let text: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&user).unwrap()).unwrap();
            let value = serde_json::to_value(&user).unwrap();
            let flat: serde_json::Value = serde_json::from_str(
                &serde_json::to_string(&Flat {
                    user: &user,
                    extra: 1,
                })
                .unwrap(),
            )
            .unwrap();
            for written in [&text, &value, &flat] {
                assert_eq!(written["preferences"], expected["preferences"], "{changed}");
                assert_eq!(written["privacySettings"], expected["privacySettings"]);
            }
            assert_eq!(serde_json::from_value::<User>(text).unwrap(), user);
            assert_eq!(serde_json::from_value::<User>(value).unwrap(), user);
            assert_eq!(user.preferences == Preferences::default(), !changed);
        }
    }
}
