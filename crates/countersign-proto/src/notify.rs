//! Notifications: tenant channel settings (`/v1/admin/notification-channels`), people's
//! preferences, webhook endpoints (`/v1/admin/webhooks`) and delivery logs. Secrets (bot
//! tokens, signing secrets, Teams webhook URLs, webhook signing keys) are accepted but never
//! shown again, except a webhook's signing secret once, when it is made.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /v1/admin/notification-channels/email`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEmailChannel {
    /// Whether this tenant's reviewers get email (the server needs `notifications.email`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Above this risk score (0 to 1), an email link decides only after a dashboard sign-in.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub require_sign_in_above_risk: Option<f64>,
}

fn yes() -> bool {
    true
}

/// `PUT /v1/admin/notification-channels/slack`. Omitted secrets keep their stored values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSlackChannel {
    /// The app's bot token (`xoxb-…`); required the first time.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub bot_token: Option<String>,
    /// The app's signing secret, which verifies button clicks; required the first time.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub signing_secret: Option<String>,
    /// The default channel id (`C…`) or name (`#approvals`) requests are posted to.
    #[serde(default)]
    #[schema(pattern = "^#?[A-Za-z0-9._-]{1,80}$")]
    pub channel: Option<String>,
    /// The workspace (`T…`) clicks must come from.
    #[serde(default)]
    #[schema(pattern = "^T[A-Za-z0-9]{0,31}$")]
    pub team_id: Option<String>,
    /// Approval group id → the channel of that group's requests.
    #[serde(default)]
    pub group_channels: BTreeMap<String, String>,
}

/// `PUT /v1/admin/notification-channels/teams`. Omitted URLs keep their stored values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTeamsChannel {
    /// The Workflows webhook ("When a Teams webhook request is received") of the tenant.
    /// The tenant needs it or a group webhook.
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub webhook_url: Option<String>,
    /// Approval group id → that group's own Workflows webhook.
    #[serde(default)]
    pub group_webhook_urls: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EmailChannelView {
    pub enabled: bool,
    /// Whether the server has an SMTP server (`notifications.email.smtp_url`).
    pub smtp_configured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sign_in_above_risk: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlackChannelView {
    pub bot_token_set: bool,
    pub signing_secret_set: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    pub group_channels: BTreeMap<String, String>,
    /// Where Slack must send button clicks (the app's Interactivity Request URL).
    pub interactivity_url: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamsChannelView {
    pub webhook_url_set: bool,
    /// Groups with their own webhook (the URLs are not shown).
    pub groups_with_webhooks: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationChannels {
    pub email: EmailChannelView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannelView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsChannelView>,
}

/// What a "send a test" did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestSent {
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A person's channels.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationPreferencesView {
    pub user_id: String,
    pub email: bool,
    /// Slack direct messages (a tenant channel already carries requests).
    pub slack: bool,
    /// Web Push to the devices where the dashboard is installed.
    pub push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user_id: Option<String>,
    /// Devices subscribed to Web Push.
    pub push_devices: u32,
}

/// Changes to a person's channels; omitted fields keep their values. `slack_user_id: null`
/// forgets the Slack user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutNotificationPreferences {
    #[serde(default)]
    pub email: Option<bool>,
    #[serde(default)]
    pub slack: Option<bool>,
    #[serde(default)]
    pub push: Option<bool>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[UW][A-Z0-9]{1,31}$")]
    pub slack_user_id: Option<Option<String>>,
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// `POST /v1/admin/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub url: String,
    /// Event types; empty or absent means every event.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub description: Option<String>,
}

/// `PATCH /v1/admin/webhooks/{id}`: omitted fields keep their values; `disabled: false`
/// enables an endpoint that was disabled (by a 410 or an admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^https?://[^/?#@\s\x00-\x1f\x7f-\x9f]+([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
    )]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// An empty description removes it.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^(|[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*)$"
    )]
    pub description: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new endpoint, or one with a new secret: the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub view: WebhookView,
    /// `whsec_…`: verifies the `webhook-signature` header.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// One delivery of a notification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub approval_id: String,
    pub channel: String,
    /// Where it went: an email address, a Slack channel or `dm:<user id>`, a Teams target,
    /// a webhook endpoint id, a push subscription id.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When a pending delivery is tried next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
