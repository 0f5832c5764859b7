//! The claims of an access token (grant): exactly what was approved, for whom and by whom.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use countersign_proto::ErrorCode;

use crate::approval::ApprovalRequest;
use crate::{Error, Result, ids, secret};

/// The RFC 9396 `type` of the authorization detail that describes an approved CIBA request.
pub const DETAIL_TYPE: &str = "countersign_approval";
/// The RFC 9396 `type` of the authorization detail that describes an approved tool call.
pub const TOOL_DETAIL_TYPE: &str = "countersign_tool_call";

/// RFC 9396 authorization details of a grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AuthorizationDetail {
    Approval {
        #[serde(rename = "type")]
        kind: String,
        scope: String,
        binding_message: String,
        context: Value,
        /// Hex SHA-256 of the RFC 8785 canonical JSON of `context`.
        context_sha256: String,
    },
    ToolCall {
        #[serde(rename = "type")]
        kind: String,
        tool: String,
        arguments: Value,
        /// Hex SHA-256 of the RFC 8785 canonical JSON of `arguments`: the executor hashes the
        /// arguments it is about to run the same way and compares.
        arguments_sha256: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    /// The tenant the approval belongs to.
    pub tid: String,
    /// The resource the grant is for (RFC 8707): a verifier accepts only its own.
    pub aud: String,
    /// The reviewer the request was addressed to.
    pub sub: String,
    /// The agent that asked and may use the token.
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub approval_id: String,
    /// Who decided (a user id, or an admin key id).
    pub approved_by: String,
    pub authorization_details: Vec<AuthorizationDetail>,
}

impl GrantClaims {
    /// The claims for an approved request, for `audience` (see [`audience`]); `jti` is fresh
    /// and random.
    pub fn for_approval(
        issuer: &str,
        request: &ApprovalRequest,
        audience: String,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> GrantClaims {
        let detail = match &request.tool {
            Some(tool) => AuthorizationDetail::ToolCall {
                kind: TOOL_DETAIL_TYPE.to_string(),
                tool: tool.tool_name.clone(),
                arguments: request.context.clone(),
                arguments_sha256: request.context_sha256.clone(),
            },
            None => AuthorizationDetail::Approval {
                kind: DETAIL_TYPE.to_string(),
                scope: request.scope.clone(),
                binding_message: request.binding_message.clone(),
                context: request.context.clone(),
                context_sha256: request.context_sha256.clone(),
            },
        };
        // The subject: the user who was asked (CIBA), or the user the agent acts for, or the
        // agent itself.
        let sub = request
            .user_id
            .clone()
            .or_else(|| request.tool.as_ref().and_then(|t| t.on_behalf_of.clone()))
            .unwrap_or_else(|| request.agent_id.clone());
        GrantClaims {
            iss: issuer.to_string(),
            tid: request.tenant_id.clone(),
            aud: audience,
            sub,
            client_id: request.agent_id.clone(),
            scope: request.scope.clone(),
            jti: format!("{}.{}", ids::new_id("grt"), &secret::random_token()[..16]),
            iat: now.timestamp(),
            exp: (now + lifetime).timestamp(),
            approval_id: request.id.clone(),
            approved_by: request.decided_by.clone().unwrap_or_default(),
            authorization_details: vec![detail],
        }
    }
}

/// The claims of a CIBA access token: the grant's claims with the RFC 9396 details the client
/// asked for ahead of the approval's own detail.
pub fn oidc_access_claims(
    grant: &GrantClaims,
    requested_details: &[Value],
) -> crate::Result<Value> {
    let mut claims = serde_json::to_value(grant).map_err(crate::Error::internal)?;
    if let Value::Object(map) = &mut claims {
        let mut details: Vec<Value> = requested_details.to_vec();
        if let Some(Value::Array(own)) = map.remove("authorization_details") {
            details.extend(own);
        }
        map.insert("authorization_details".into(), Value::Array(details));
    }
    Ok(claims)
}

/// The ID token of an approved CIBA request (OpenID Connect Core 1.0 §2, CIBA §10.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user approved.
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    pub amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(
        rename = "urn:openid:params:jwt:claim:auth_req_id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_req_id: Option<String>,
}

/// The audience of a grant when the agent names no resource: one URN per tenant, so that a
/// grant of one tenant never passes for another's.
pub fn tenant_audience(tenant_id: &str) -> String {
    format!("{TENANT_AUDIENCE_PREFIX}{tenant_id}")
}

pub const TENANT_AUDIENCE_PREFIX: &str = "urn:countersign:tenant:";

/// The most audiences an allow-list or an executor key may hold.
pub const MAX_AUDIENCES: usize = 20;
const MAX_AUDIENCE_CHARS: usize = 500;

/// Whether `value` can be an audience: an absolute URI without a fragment (RFC 8707 §2).
fn is_audience(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    value.len() <= MAX_AUDIENCE_CHARS
        && scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !value.contains('#')
        && value.chars().all(|c| c.is_ascii_graphic())
}

/// Checks an audience list an admin configures (a tenant's or a policy's allow-list, an
/// executor key's audiences). Tenant URNs are implicit and cannot be listed.
pub fn check_audiences(field: &str, audiences: &[String]) -> Result<()> {
    if audiences.len() > MAX_AUDIENCES {
        return Err(Error::invalid(format!(
            "`{field}` may list at most {MAX_AUDIENCES} audiences"
        )));
    }
    for a in audiences {
        if !is_audience(a) {
            return Err(Error::invalid(format!(
                "`{field}`: {a:?} is not an absolute URI without a fragment (at most {MAX_AUDIENCE_CHARS} characters)"
            )));
        }
        if a.starts_with(TENANT_AUDIENCE_PREFIX) {
            return Err(Error::invalid(format!(
                "`{field}`: {a:?} is a tenant audience, which grants get when no resource is named"
            )));
        }
    }
    Ok(())
}

/// The audience of a grant: the `resource` the agent named, if the allow-list has it (the
/// policy's when it has one, else the tenant's), or the tenant's URN when it named none.
pub fn audience(
    tenant_id: &str,
    resource: Option<&str>,
    policy_audiences: &[String],
    tenant_audiences: &[String],
) -> Result<String> {
    let own = tenant_audience(tenant_id);
    let Some(resource) = resource else {
        return Ok(own);
    };
    let allowed = if policy_audiences.is_empty() {
        tenant_audiences
    } else {
        policy_audiences
    };
    if resource == own || (is_audience(resource) && allowed.iter().any(|a| a == resource)) {
        return Ok(resource.to_string());
    }
    let shown: String = resource.chars().take(100).collect();
    Err(Error::coded(
        ErrorCode::InvalidTarget,
        format!("`resource` {shown:?} is not an audience grants may be issued for here"),
    ))
}

/// Why a grant stopped being usable before it expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    /// An executor introspected it with `consume=true`: it was used.
    Consumed,
    /// Its agent, an executor of its audience or an admin revoked it.
    Revoked,
}

impl GrantEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantEnd::Consumed => "consumed",
            GrantEnd::Revoked => "revoked",
        }
    }
}

/// A grant that ends, as the store records it (keyed by `jti`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndedGrant {
    pub tenant_id: String,
    pub jti: String,
    pub approval_id: String,
    pub audience: String,
    pub end: GrantEnd,
    pub at: DateTime<Utc>,
    /// The grant's `exp`: after it the record is of no use.
    pub expires_at: DateTime<Utc>,
}

/// What introspection and revocation read from a grant whose signature verified. Extra claims
/// (CIBA's requested authorization details) are kept aside untouched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GrantIdentity {
    pub iss: String,
    pub tid: String,
    pub aud: Audience,
    pub jti: String,
    pub exp: i64,
    pub client_id: String,
    pub approval_id: String,
}

/// `aud` as a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(list) => list,
        }
    }
}

/// Which audiences a verifier speaks for.
#[derive(Debug, Clone, Copy)]
pub enum Verifier<'a> {
    /// A tenant admin: any audience of their tenant.
    Admin,
    /// An executor: only its own audiences.
    Executor(&'a [String]),
}

impl GrantIdentity {
    /// Whether the grant is usable by `verifier` of `tenant_id` at `now`: our issuer, not
    /// expired, the verifier's tenant and one of its audiences. Whether it was consumed or
    /// revoked is the store's to say.
    pub fn active_for(
        &self,
        issuer: &str,
        tenant_id: &str,
        verifier: Verifier<'_>,
        now: DateTime<Utc>,
    ) -> bool {
        self.iss == issuer
            && now.timestamp() < self.exp
            && self.tid == tenant_id
            && match verifier {
                Verifier::Admin => true,
                Verifier::Executor(mine) => self.aud.values().iter().any(|a| mine.contains(a)),
            }
    }

    /// The audience recorded with a consumed or revoked grant.
    pub fn first_audience(&self) -> String {
        self.aud.values().first().cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["https://payments.example.com".to_string()]
    }

    #[test]
    fn no_resource_means_the_tenant_urn() {
        assert_eq!(
            audience("acme", None, &[], &allowed()).unwrap(),
            "urn:countersign:tenant:acme"
        );
    }

    #[test]
    fn a_resource_must_be_on_the_allow_list_of_the_policy_or_else_the_tenant() {
        let pay = "https://payments.example.com";
        assert_eq!(audience("acme", Some(pay), &[], &allowed()).unwrap(), pay);
        let other = vec!["https://ledger.example.com".to_string()];
        let refused = audience("acme", Some(pay), &other, &allowed()).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::InvalidTarget);
        for bad in [
            "https://evil.example.com",
            "not a uri",
            "urn:countersign:tenant:other",
        ] {
            let e = audience("acme", Some(bad), &[], &allowed()).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidTarget, "{bad}");
        }
        assert!(audience("acme", Some("urn:countersign:tenant:acme"), &[], &[]).is_ok());
    }

    #[test]
    fn allow_lists_hold_absolute_uris_only() {
        assert!(check_audiences("a", &allowed()).is_ok());
        for bad in [
            "payments",
            "https://x.example.com/#frag",
            "urn:countersign:tenant:acme",
            "https://a b",
        ] {
            assert!(check_audiences("a", &[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_right_tenant_and_audience_see_an_active_grant() {
        let now = Utc::now();
        let grant = GrantIdentity {
            iss: "https://cs.example.com".into(),
            tid: "acme".into(),
            aud: Audience::One("https://payments.example.com".into()),
            jti: "j".into(),
            exp: now.timestamp() + 60,
            client_id: "agt".into(),
            approval_id: "apr".into(),
        };
        let mine = allowed();
        let theirs = vec!["https://other.example.com".to_string()];
        let iss = "https://cs.example.com";
        assert!(grant.active_for(iss, "acme", Verifier::Executor(&mine), now));
        assert!(grant.active_for(iss, "acme", Verifier::Admin, now));
        assert!(!grant.active_for(iss, "globex", Verifier::Executor(&mine), now));
        assert!(!grant.active_for(iss, "acme", Verifier::Executor(&theirs), now));
        assert!(!grant.active_for("https://elsewhere", "acme", Verifier::Admin, now));
        let later = now + Duration::seconds(60);
        assert!(!grant.active_for(iss, "acme", Verifier::Admin, later));
    }
}
