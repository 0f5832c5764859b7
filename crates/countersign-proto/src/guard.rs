//! The guard API: `/v1/guard/{proxyId}/*` (snake_case), shaped like the seed.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{ApprovalStatus, TrustLevel};

/// What a policy (or the tenant default) answers for a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    Allow,
    Block,
    RequireApproval,
}

impl PolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Allow => "allow",
            PolicyAction::Block => "block",
            PolicyAction::RequireApproval => "require_approval",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyAction> {
        [
            PolicyAction::Allow,
            PolicyAction::Block,
            PolicyAction::RequireApproval,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// What happens to an approval nobody decided in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutOutcome {
    /// The request becomes `expired` (and the tool call must not run).
    #[default]
    Reject,
    /// The request becomes `approved`, recorded as approved by the timeout.
    Approve,
}

impl TimeoutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutOutcome::Reject => "reject",
            TimeoutOutcome::Approve => "approve",
        }
    }

    pub fn parse(s: &str) -> Option<TimeoutOutcome> {
        match s {
            "reject" => Some(TimeoutOutcome::Reject),
            "approve" => Some(TimeoutOutcome::Approve),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// Minutes after the request was made: 1 to `timeout_minutes` - 1.
    #[schema(minimum = 1, maximum = 1439)]
    pub after_minutes: u32,
    /// The approval group whose members may also decide from then on.
    pub escalate_to: String,
}

/// `approval_config` of a policy, with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalConfig {
    /// 1 to 1440, default 30.
    #[schema(minimum = 1, maximum = 1440)]
    pub timeout_minutes: u32,
    /// email, slack, teams, webhook or dashboard.
    pub notification_channels: Vec<String>,
    pub approval_group_id: Option<String>,
    pub default_on_timeout: TimeoutOutcome,
    pub escalation_rules: Vec<EscalationRule>,
    /// Distinct eligible reviewers who must approve (quorum), default 1; one rejection rejects.
    #[schema(minimum = 1, maximum = 20)]
    pub required_approvals: u32,
    /// Whether the person the agent acts for may approve their own request (default false).
    pub allow_self_approval: bool,
    /// The audiences (RFC 8707 `resource` values) a grant of this policy's approvals may name;
    /// when empty, the tenant's `grant_audiences` apply.
    pub audiences: Vec<String>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            timeout_minutes: 30,
            notification_channels: Vec::new(),
            approval_group_id: None,
            default_on_timeout: TimeoutOutcome::Reject,
            escalation_rules: Vec::new(),
            required_approvals: 1,
            allow_self_approval: false,
            audiences: Vec::new(),
        }
    }
}

/// `POST /policies` and `PUT /policies/{id}`: the seed's body plus optional fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub name: String,
    /// A glob over tool names, e.g. `payment_*`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub tool_pattern: String,
    pub action: PolicyAction,
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub description: Option<String>,
    /// Higher wins when several policies match; default 0.
    #[serde(default)]
    #[schema(minimum = -1000000, maximum = 1000000)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// A CEL expression over `tool` (`name`, `annotations` with MCP's four hints as booleans,
    /// `mcp_server`), `args`, `agent` (id, name, trust_level), `session`, `risk`, `threats` and
    /// `scope`; the policy applies only when it is true.
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub condition: Option<String>,
    #[serde(default)]
    pub approval_config: Option<ApprovalConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub tool_pattern: String,
    pub action: PolicyAction,
    pub priority: i64,
    pub is_active: bool,
    pub condition: Option<String>,
    pub approval_config: ApprovalConfig,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicyView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Asked first.
    Primary,
    /// May decide once the group's `escalation_minutes` have passed.
    Backup,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "primary",
            MemberRole::Backup => "backup",
        }
    }

    pub fn parse(s: &str) -> Option<MemberRole> {
        match s {
            "primary" => Some(MemberRole::Primary),
            "backup" => Some(MemberRole::Backup),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// An active user of the tenant.
    #[schema(
        max_length = 254,
        pattern = r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^@\s\x00-\x1f\x7f-\x9f]+@([^@.\s\x00-\x1f\x7f-\x9f]|[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f])[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub email: String,
    pub role: MemberRole,
}

/// `POST /approval-groups` and `PUT /approval-groups/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// Optional id (letters, digits, `_`, `-`), e.g. `group_finance`; generated when absent.
    /// On `PUT` it must be the id in the path.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub name: String,
    /// Distinct users.
    #[schema(min_items = 1, max_items = 200)]
    pub members: Vec<MemberInput>,
    /// Minutes until backups join; default: backups join at once.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1440)]
    pub escalation_minutes: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub role: MemberRole,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub members: Vec<MemberView>,
    pub escalation_minutes: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    pub approval_groups: Vec<GroupView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub risk_score_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_pattern: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub condition: RoutingCondition,
    pub approval_group: String,
}

/// `PUT /routing-rules`: first match wins; otherwise the policy's group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingRules {
    #[schema(max_items = 100)]
    pub routing_rules: Vec<RoutingRule>,
}

/// Agents of these trust levels always need approval for these tools or scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    #[schema(min_items = 1)]
    pub trust_levels: Vec<TrustLevel>,
    /// Globs over tool names; a rule needs a tool pattern or a scope.
    #[serde(default)]
    pub tool_patterns: Vec<String>,
    /// Matched against the tool call's optional `scope` (an action category).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Who decides; default: the tenant's `default_approval_group_id`.
    #[serde(default)]
    pub approval_group_id: Option<String>,
}

/// `GET`/`PUT /settings`: the tenant's guard settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardSettings {
    /// The action when no policy matches (default allow).
    pub default_action: PolicyAction,
    /// The group asked when a default or trust rule requires approval.
    pub default_approval_group_id: Option<String>,
    /// Whether tenant admins may decide tool-call approvals (they always may for CIBA).
    pub admins_can_decide: bool,
    pub trust_rules: Vec<TrustRule>,
    /// Timeout of approvals the tenant default or a trust rule requires, in minutes.
    #[schema(minimum = 1, maximum = 1440)]
    pub default_timeout_minutes: u32,
    /// The audiences (RFC 8707 `resource` values, absolute URIs) agents may ask grants for;
    /// without a `resource` a grant's audience is `urn:countersign:tenant:<tenant id>`.
    pub grant_audiences: Vec<String>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            default_action: PolicyAction::Allow,
            default_approval_group_id: None,
            admins_can_decide: false,
            trust_rules: Vec::new(),
            default_timeout_minutes: 30,
            grant_audiences: Vec::new(),
        }
    }
}

/// MCP tool annotations: hints the MCP server gives about a tool (`tools/list`). They are
/// the server's claims, not guarantees; policies may use them
/// (`tool.annotations.destructiveHint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolAnnotations {
    /// The tool does not change its environment (MCP default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// The tool may destroy or overwrite (MCP default true unless read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// Calling it again with the same arguments changes nothing more (MCP default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// The tool reaches beyond a closed domain, e.g. the web (MCP default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// Where a tool call came from when an MCP gateway sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpOrigin {
    /// The upstream MCP server: its registered id, or the name `countersign mcp wrap` gives it.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub server: String,
    /// The MCP client's name and version, e.g. `claude-desktop 1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub client: Option<String>,
}

/// What is read from JSON: the same fields, from an object only (serde's derive would also
/// read an array into a struct, field by field).
mod from_object {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserialize;
    use serde::de::{Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};

    use super::{McpOrigin, ToolAnnotations};

    fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        struct Object<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(PhantomData))
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Annotations {
        #[serde(default)]
        read_only_hint: Option<bool>,
        #[serde(default)]
        destructive_hint: Option<bool>,
        #[serde(default)]
        idempotent_hint: Option<bool>,
        #[serde(default)]
        open_world_hint: Option<bool>,
    }

    impl<'de> Deserialize<'de> for ToolAnnotations {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let a: Annotations = object(d)?;
            Ok(ToolAnnotations {
                read_only_hint: a.read_only_hint,
                destructive_hint: a.destructive_hint,
                idempotent_hint: a.idempotent_hint,
                open_world_hint: a.open_world_hint,
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Origin {
        server: String,
        #[serde(default)]
        client: Option<String>,
    }

    impl<'de> Deserialize<'de> for McpOrigin {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let o: Origin = object(d)?;
            Ok(McpOrigin {
                server: o.server,
                client: o.client,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_objects_are_read() {
            let a: ToolAnnotations = serde_json::from_str(r#"{"destructiveHint": true}"#).unwrap();
            assert_eq!(a.destructive_hint, Some(true));
            assert!(serde_json::from_str::<ToolAnnotations>("[null, null]").is_err());
            assert!(serde_json::from_str::<ToolAnnotations>("[]").is_err());
            assert!(serde_json::from_str::<ToolAnnotations>(r#"{"title": "x"}"#).is_err());
            assert!(serde_json::from_value::<ToolAnnotations>(serde_json::json!([true])).is_err());
            let o: McpOrigin = serde_json::from_str(r#"{"server": "files"}"#).unwrap();
            assert_eq!(o.server, "files");
            assert!(serde_json::from_str::<McpOrigin>(r#"["files", null]"#).is_err());
            assert!(serde_json::from_value::<McpOrigin>(serde_json::json!(["files"])).is_err());
            assert!(serde_json::from_str::<McpOrigin>(r#"{"server": "f", "x": 1}"#).is_err());
            assert!(serde_json::from_str::<McpOrigin>(r#"{"client": "c"}"#).is_err());
        }
    }
}

/// `POST /tool`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub session_id: String,
    /// `{name, arguments}`, OpenAI's `{type:"function", function:{name, arguments}}` or
    /// Anthropic's `{type:"tool_use", name, input}`.
    #[schema(value_type = Object)]
    pub tool_call: serde_json::Value,
    /// An action category for trust rules, e.g. `payments`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*[^\s\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb][^\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub scope: Option<String>,
    /// Why the agent wants to run it, shown to reviewers as the agent's words.
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub reason: Option<String>,
    /// The user (id or email) the agent acts for; they may not approve it themselves.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// The MCP tool's annotations, when the call came through an MCP gateway.
    // Left out when absent, so the idempotency fingerprint of a call without them is what it
    // was before these fields existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
    /// The MCP server (and client) the call came through, when an MCP gateway sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpOrigin>,
}

/// The answer to `POST /tool`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolDecision {
    pub action: PolicyAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub risk_score: f64,
    pub threats_detected: Vec<String>,
    /// The name of the policy that decided; null when the tenant default did.
    pub policy_matched: Option<String>,
}

/// `POST /policies/evaluate`: what `POST /tool` would answer, without creating anything.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    #[schema(value_type = Object)]
    pub tool_call: serde_json::Value,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Evaluate as this agent (default: a `standard` agent).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The MCP tool's annotations, as `POST /tool` takes them.
    #[serde(default)]
    pub annotations: Option<ToolAnnotations>,
    /// The MCP origin, as `POST /tool` takes it.
    #[serde(default)]
    pub mcp: Option<McpOrigin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub reviewer: String,
    /// approve or reject.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// api, cli, dashboard, email, slack, teams.
    pub channel: String,
    pub decided_at: DateTime<Utc>,
}

/// `GET /approvals/{id}`: the seed's fields first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuardApprovalView {
    pub approval_id: String,
    pub status: ApprovalStatus,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
    /// The rejection reason, when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub tool_name: String,
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    pub arguments_sha256: String,
    pub session_id: Option<String>,
    /// The agent's own words about why.
    pub agent_reason: Option<String>,
    pub agent_id: String,
    pub risk_score: f64,
    pub threats_detected: Vec<String>,
    pub policy_matched: Option<String>,
    pub approval_group: Option<String>,
    pub escalation_level: u32,
    pub required_approvals: u32,
    pub decisions: Vec<DecisionView>,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// The MCP tool's annotations as the gateway sent them (not defaulted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
    /// The MCP server (and client) the call came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpOrigin>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Hold the request open up to this many seconds (at most 30) until a decision.
    #[serde(default)]
    pub wait: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// pending, approved, rejected, expired or cancelled; `all` or empty for every status.
    #[serde(default)]
    #[param(pattern = "^(|all|pending|approved|rejected|expired|cancelled)$")]
    pub status: Option<String>,
    /// Tool name (exact).
    #[serde(default)]
    pub tool: Option<String>,
    /// Email or user id of the reviewer who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Requested at or after (RFC 3339).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// Requested before (RFC 3339).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    #[param(pattern = r"^apr_[0-9a-hjkmnp-tv-z]{26}$")]
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryItem {
    pub approval_id: String,
    pub tool_name: String,
    pub status: ApprovalStatus,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpOrigin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub approvals: Vec<HistoryItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]*$"
    )]
    pub reason: Option<String>,
}

/// `POST /approvals/{id}/grant?resource=...`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// RFC 8707: the resource (an absolute URI) the grant is for, one of the audiences the
    /// tenant or the policy allows; default `urn:countersign:tenant:<tenant id>`.
    #[serde(default)]
    pub resource: Option<String>,
}

/// The signed grant for an approved tool call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}
