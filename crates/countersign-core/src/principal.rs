use chrono::{DateTime, Utc};

use crate::approval::{ApprovalRequest, RequestKind, Verdict};
use crate::audit::{Actor, ActorKind};
use crate::{Error, Result};

/// The refusal of everything an executor key is not for.
pub fn executor_only() -> Error {
    Error::forbidden("executor keys may only introspect and revoke grants")
}

/// Who an authenticated API key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reviewer {
        user_id: String,
    },
    Agent {
        agent_id: String,
    },
    /// A service that runs approved actions: it may only introspect and revoke the grants of
    /// these audiences.
    Executor {
        audiences: Vec<String>,
    },
}

/// An authenticated caller, always confined to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    /// The credential: an API key id, or a dashboard session id.
    pub key_id: String,
    pub role: Role,
    /// The person behind the credential, when there is one (reviewer keys, dashboard
    /// sessions); admin API keys have none.
    pub user_id: Option<String>,
}

impl Principal {
    /// A reviewer acting through a channel that names them without an API key (a review link,
    /// a verified Slack click): they may do only what their own eligibility allows.
    pub fn reviewer(tenant_id: &str, user_id: &str, via: &str) -> Principal {
        Principal {
            tenant_id: tenant_id.to_string(),
            key_id: via.to_string(),
            role: Role::Reviewer {
                user_id: user_id.to_string(),
            },
            user_id: Some(user_id.to_string()),
        }
    }

    /// How this caller appears in the audit trail.
    pub fn actor(&self) -> Actor {
        match &self.role {
            Role::Admin => Actor::new(
                ActorKind::Admin,
                self.user_id.as_deref().unwrap_or(&self.key_id),
            ),
            Role::Reviewer { user_id } => Actor::new(ActorKind::Reviewer, user_id),
            Role::Agent { agent_id } => Actor::new(ActorKind::Agent, agent_id),
            Role::Executor { .. } => Actor::new(ActorKind::Executor, &self.key_id),
        }
    }

    /// Which grants this caller may introspect: an admin any of the tenant's, an executor
    /// those of its audiences; nobody else any.
    pub fn grant_verifier(&self) -> Result<crate::grant::Verifier<'_>> {
        match &self.role {
            Role::Admin => Ok(crate::grant::Verifier::Admin),
            Role::Executor { audiences } => Ok(crate::grant::Verifier::Executor(audiences)),
            _ => Err(Error::forbidden(
                "grants are introspected with an executor or admin key",
            )),
        }
    }

    /// Whether this caller may revoke a grant issued to `client_id` for `audiences`: the agent
    /// it was issued to, an executor of one of its audiences, or an admin (the tenant is
    /// checked before).
    pub fn may_revoke(&self, client_id: &str, audiences: &[String]) -> Result<()> {
        let allowed = match &self.role {
            Role::Admin => true,
            Role::Agent { agent_id } => agent_id == client_id,
            Role::Executor { audiences: mine } => audiences.iter().any(|a| mine.contains(a)),
            Role::Reviewer { .. } => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::forbidden(
                "only the grant's agent, an executor of its audience or an admin revokes it",
            ))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::forbidden("this needs an admin key"))
        }
    }

    /// The agent this key belongs to; other roles are refused.
    pub fn require_agent(&self) -> Result<&str> {
        match &self.role {
            Role::Agent { agent_id } => Ok(agent_id),
            _ => Err(Error::forbidden("this needs an agent key")),
        }
    }

    /// Reviewers and admins may look at approval requests; agents use their own endpoints.
    pub fn require_reviewer_or_admin(&self) -> Result<()> {
        match &self.role {
            Role::Admin | Role::Reviewer { .. } => Ok(()),
            Role::Agent { .. } => Err(Error::forbidden(
                "agent keys cannot read or decide approval requests",
            )),
            Role::Executor { .. } => Err(executor_only()),
        }
    }

    /// The person behind this caller: a reviewer, or an admin signed in to the dashboard;
    /// admin API keys name no person.
    pub fn person(&self) -> Option<&str> {
        match &self.role {
            Role::Reviewer { user_id } => Some(user_id),
            Role::Admin => self.user_id.as_deref(),
            Role::Agent { .. } | Role::Executor { .. } => None,
        }
    }

    /// Whether this caller may decide `request` now; the one rule every face applies.
    /// `reviewer_since` is when the caller's person became (or becomes) an eligible reviewer
    /// of the request, if ever.
    ///
    /// - Agents never decide.
    /// - Separation of duties: unless the request's policy allows self-approval, the person a
    ///   request acts for (`on_behalf_of`) never decides it, whatever their role.
    /// - An eligible reviewer decides as such, whatever their role: a dashboard admin who is a
    ///   member of the routed group decides as a member even when admins may not.
    /// - Otherwise an admin decides seed CIBA requests, and tool calls when the tenant allows
    ///   it (`admins_can_decide`); an OpenID request only ever by the user it names, because
    ///   its ID token says that user authenticated.
    pub fn may_decide(
        &self,
        request: &ApprovalRequest,
        reviewer_since: Option<DateTime<Utc>>,
        admins_can_decide: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match self.role {
            Role::Agent { .. } => {
                return Err(Error::forbidden(
                    "agent keys cannot approve or deny requests",
                ));
            }
            Role::Executor { .. } => return Err(executor_only()),
            Role::Admin | Role::Reviewer { .. } => {}
        }
        let requester = request
            .tool
            .as_ref()
            .and_then(|t| t.on_behalf_of.as_deref());
        if requester.is_some() && requester == self.person() && !request.rules.allow_self_approval {
            return Err(Error::forbidden(
                "you are the person this request acts for; someone else must decide it",
            ));
        }
        if reviewer_since.is_some_and(|since| since <= now) {
            return Ok(());
        }
        match (&self.role, request.kind) {
            (Role::Admin, RequestKind::Ciba) => Ok(()),
            (Role::Admin, RequestKind::Tool) if admins_can_decide => Ok(()),
            (Role::Admin, RequestKind::Tool) => Err(Error::forbidden(
                "tenant admins may not decide tool-call approvals here (guard setting admins_can_decide)",
            )),
            (Role::Admin, RequestKind::Oidc) => Err(Error::forbidden(
                "an OpenID request is decided only by the user it names: its ID token says that user authenticated",
            )),
            _ => match reviewer_since {
                Some(since) => Err(Error::forbidden(format!(
                    "you may decide this request from {} (after escalation)",
                    since.to_rfc3339()
                ))),
                None if request.kind != RequestKind::Tool => Err(Error::forbidden(
                    "this request is addressed to another reviewer",
                )),
                None => Err(Error::forbidden(
                    "you are not an eligible reviewer of this request",
                )),
            },
        }
    }

    /// One person is one voter: a vote is recorded under the person's user id, whichever key,
    /// session, link or chat account carries it. An admin API key names no person, so nothing
    /// tells two of them apart: such keys may reject, and approve a request that needs one
    /// approval, but cannot approve toward a quorum of more than one.
    pub fn may_vote(&self, request: &ApprovalRequest, verdict: Verdict) -> Result<()> {
        let quorum = request.rules.required_approvals > 1;
        if verdict == Verdict::Approve && quorum && self.person().is_none() {
            return Err(Error::forbidden(
                "this request needs approvals from several people; an admin key names no person, so sign in or use a reviewer key",
            ));
        }
        Ok(())
    }

    /// Which reviewer's requests this caller may list: `None` means all of the tenant's.
    pub fn visible_reviewer(&self) -> Result<Option<&str>> {
        match &self.role {
            Role::Admin => Ok(None),
            Role::Reviewer { user_id } => Ok(Some(user_id)),
            Role::Agent { .. } => Err(Error::forbidden(
                "agent keys cannot read or decide approval requests",
            )),
            Role::Executor { .. } => Err(executor_only()),
        }
    }

    /// Who may see a request through `face`: admins their tenant's, reviewers those they are
    /// (already) eligible for, and on the guard's face the agent that asked, its own. For any
    /// other agent it does not exist.
    pub fn may_see(
        &self,
        face: crate::approval::Face,
        request_agent_id: &str,
        reviewer_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match (&self.role, face) {
            (Role::Agent { agent_id }, crate::approval::Face::Guard) => {
                if agent_id == request_agent_id {
                    Ok(())
                } else {
                    Err(Error::NotFound("no such approval request".into()))
                }
            }
            _ => self.may_view(reviewer_since, now),
        }
    }

    /// Reviewers see the requests they are (already) eligible for; admins see all.
    pub fn may_view(
        &self,
        reviewer_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        match self.visible_reviewer()? {
            None => Ok(()),
            Some(_) if reviewer_since.is_some_and(|s| s <= now) => Ok(()),
            Some(_) => Err(Error::NotFound("no such approval request".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::approval::Face;
    use countersign_proto::ErrorCode;

    fn principal(role: Role) -> Principal {
        Principal {
            tenant_id: "default".into(),
            key_id: "key_1".into(),
            role,
            user_id: None,
        }
    }

    #[test]
    fn who_may_see_a_request_on_each_face() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let earlier = Some(now - chrono::Duration::minutes(1));
        let later = Some(now + chrono::Duration::minutes(1));
        let asker = principal(Role::Agent {
            agent_id: "agt_1".into(),
        });
        let other = principal(Role::Agent {
            agent_id: "agt_2".into(),
        });
        let reviewer = principal(Role::Reviewer {
            user_id: "usr_1".into(),
        });
        let code = |r: Result<()>| r.err().map(|e| e.code());
        // The guard's face: the agent that asked sees its own; another agent sees nothing.
        assert_eq!(code(asker.may_see(Face::Guard, "agt_1", None, now)), None);
        assert_eq!(
            code(other.may_see(Face::Guard, "agt_1", None, now)),
            Some(ErrorCode::NotFound)
        );
        // Reviewer faces: agents are refused outright.
        assert_eq!(
            code(asker.may_see(Face::Review, "agt_1", None, now)),
            Some(ErrorCode::Forbidden)
        );
        // Reviewers once eligible, on every face; admins always.
        for face in [Face::Guard, Face::Review] {
            assert_eq!(code(reviewer.may_see(face, "agt_1", earlier, now)), None);
            assert_eq!(
                code(reviewer.may_see(face, "agt_1", later, now)),
                Some(ErrorCode::NotFound)
            );
            assert_eq!(
                code(reviewer.may_see(face, "agt_1", None, now)),
                Some(ErrorCode::NotFound)
            );
            assert_eq!(
                code(principal(Role::Admin).may_see(face, "agt_1", None, now)),
                None
            );
        }
    }
}
