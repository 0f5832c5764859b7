use std::sync::Arc;

use countersign_core::Clock;
use countersign_core::approval::RequestLimits;
use countersign_core::policy::GuardCache;
use countersign_core::risk::RiskAssessor;
use countersign_store::Store;

use crate::events::Events;
use crate::notify::Notifier;
use crate::oidc::Oidc;
use crate::settings::Settings;
use crate::signer::Signers;
use crate::waiters::Waiters;

/// What every handler and worker shares: one pointer, so that handing it to a request (axum
/// clones the state for each) costs one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub signer: Arc<Signers>,
    pub waiters: Arc<Waiters>,
    pub settings: Arc<Settings>,
    pub limits: Arc<RequestLimits>,
    /// The token issuer: the public base URL.
    pub issuer: Arc<str>,
    /// Compiled guard configurations per tenant.
    pub guard: Arc<GuardCache>,
    /// Held while a guard configuration is loaded and compiled, so that the calls arriving
    /// after a change wait for one compilation instead of each making their own.
    pub guard_loading: Arc<tokio::sync::Mutex<()>>,
    /// The MCP gateway's relayed sessions.
    pub mcp: Arc<crate::mcp_gateway::Gateway>,
    pub risk: Arc<dyn RiskAssessor>,
    /// Turns true when the server begins shutting down; long-polls then answer at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Request lifecycle events of this process, for the dashboard's live views.
    pub events: Arc<Events>,
    /// The passkey relying party; `None` when the public URL has no domain name (browsers
    /// refuse passkeys for bare IP addresses).
    pub webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// OpenID Connect CIBA: keys and `authorization_details` schemas.
    pub oidc: Arc<Oidc>,
    /// Reviewer notifications and every outgoing call: the delivery worker's shared parts.
    pub notifier: Arc<Notifier>,
    /// Policy conditions, run off the request threads within a budget.
    pub conditions: Arc<crate::conditions::ConditionRunner>,
    /// Rate limits per API key and per client address, and failure budgets for secrets.
    pub throttle: Arc<crate::throttle::Throttle>,
    /// API keys already checked, for a moment.
    pub principals: Arc<crate::principals::Principals>,
}
