use crate::approval::ApprovalRequest;
use crate::audit::{Actor, ActorKind};
use crate::{Error, Result};

/// Who an authenticated API key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reviewer { user_id: String },
    Agent { agent_id: String },
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
    /// How this caller appears in the audit trail.
    pub fn actor(&self) -> Actor {
        match &self.role {
            Role::Admin => Actor::new(
                ActorKind::Admin,
                self.user_id.as_deref().unwrap_or(&self.key_id),
            ),
            Role::Reviewer { user_id } => Actor::new(ActorKind::Reviewer, user_id),
            Role::Agent { agent_id } => Actor::new(ActorKind::Agent, agent_id),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden("this needs an admin key".into()))
        }
    }

    /// The agent this key belongs to; other roles are refused.
    pub fn require_agent(&self) -> Result<&str> {
        match &self.role {
            Role::Agent { agent_id } => Ok(agent_id),
            _ => Err(Error::Forbidden("this needs an agent key".into())),
        }
    }

    /// Reviewers and admins may look at approval requests; agents use their own endpoints.
    pub fn require_reviewer_or_admin(&self) -> Result<()> {
        match &self.role {
            Role::Admin | Role::Reviewer { .. } => Ok(()),
            Role::Agent { .. } => Err(Error::Forbidden(
                "agent keys cannot read or decide approval requests".into(),
            )),
        }
    }

    /// Only the named reviewer or a tenant admin decides; never an agent.
    pub fn may_decide(&self, request: &ApprovalRequest) -> Result<()> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Reviewer { user_id } if *user_id == request.user_id => Ok(()),
            Role::Reviewer { .. } => Err(Error::Forbidden(
                "this request is addressed to another reviewer".into(),
            )),
            Role::Agent { .. } => Err(Error::Forbidden(
                "agent keys cannot approve or deny requests".into(),
            )),
        }
    }

    /// Which reviewer's requests this caller may list: `None` means all of the tenant's.
    pub fn visible_reviewer(&self) -> Result<Option<&str>> {
        match &self.role {
            Role::Admin => Ok(None),
            Role::Reviewer { user_id } => Ok(Some(user_id)),
            Role::Agent { .. } => Err(Error::Forbidden(
                "agent keys cannot read or decide approval requests".into(),
            )),
        }
    }

    pub fn may_view(&self, request: &ApprovalRequest) -> Result<()> {
        match self.visible_reviewer()? {
            None => Ok(()),
            Some(user_id) if user_id == request.user_id => Ok(()),
            Some(_) => Err(Error::NotFound("no such approval request".into())),
        }
    }
}
