use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrivacySettings {
    pub profile_visibility: ProfileVisibility,
    pub show_online_status: bool,
    pub show_game_activity: bool,
    pub allow_friend_requests: bool,
    pub show_achievements: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            profile_visibility: ProfileVisibility::Public,
            show_online_status: true,
            show_game_activity: true,
            allow_friend_requests: true,
            show_achievements: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProfileVisibility {
    #[default]
    Public,
    Friends,
    Private,
}
