//! The MCP gateway: `/mcp/{id}` speaks streamable HTTP to agents and relays each session to the
//! upstream MCP server an admin registered under that id, checking every `tools/call` with the
//! guard in-process (the same rules as `POST /v1/guard/{proxy}/tool`).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use countersign_core::Error;
use countersign_core::approval::Face;
use countersign_core::principal::Principal;
use countersign_mcp::{Guard, GuardFailure, HttpUpstream, McpCall, Proxy, SessionOrigin, Upstream};
use countersign_proto::guard::{GuardApprovalView, ToolDecision};
use reqwest013::dns::{Addrs, Name, Resolve, Resolving};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{
    SessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::error::ApiResult;
use crate::guard;
use crate::idempotency::Answer;
use crate::notify::outbound::reachable_addresses;
use crate::service;
use crate::settings::OutboundSettings;
use crate::state::AppState;

const SESSION_HEADER: &str = "mcp-session-id";

/// Whose a relayed session is: only the same key, on the same server id, may use it again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    tenant_id: String,
    key_id: String,
    server_id: String,
}

/// The gateway's sessions (in this replica's memory: a client reconnects to the replica that
/// holds its session, or starts a new one).
pub struct Gateway {
    sessions: Arc<LocalSessionManager>,
    /// Cancelled when the server stops, so open sessions (and their event streams) end
    /// instead of holding the shutdown until its grace period.
    stopped: CancellationToken,
    owners: parking_lot::Mutex<HashMap<String, Owner>>,
    client: reqwest013::Client,
}

impl Gateway {
    pub fn new(
        outbound: &OutboundSettings,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Gateway> {
        let stopped = CancellationToken::new();
        let on_stop = stopped.clone();
        tokio::spawn(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            on_stop.cancel();
        });
        Ok(Gateway {
            sessions: Arc::new(LocalSessionManager::default()),
            stopped,
            owners: parking_lot::Mutex::new(HashMap::new()),
            client: upstream_client(outbound)?,
        })
    }

    async fn forget_closed_sessions(&self) {
        let ids: Vec<String> = self.owners.lock().keys().cloned().collect();
        let mut closed = Vec::new();
        for id in ids {
            if !self
                .sessions
                .has_session(&id.clone().into())
                .await
                .unwrap_or(false)
            {
                closed.push(id);
            }
        }
        let mut owners = self.owners.lock();
        for id in closed {
            owners.remove(&id);
        }
    }
}

/// The HTTP client towards upstream MCP servers, under the same rules as every outgoing call
/// (no proxies, no redirects, https unless allowed, public addresses unless allowed), but
/// without a total timeout: MCP responses and event streams may stay open.
fn upstream_client(outbound: &OutboundSettings) -> anyhow::Result<reqwest013::Client> {
    Ok(reqwest013::Client::builder()
        .no_proxy()
        .https_only(!outbound.allow_http)
        .redirect(reqwest013::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(outbound.connect_timeout_ms))
        .dns_resolver(Arc::new(PublicResolver {
            allow_private: outbound.allow_private_networks,
        }))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Keeps only the addresses outgoing calls may reach (`notify::outbound`, for rmcp's reqwest).
struct PublicResolver {
    allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = reachable_addresses(name.as_str(), allow_private).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The guard in-process, acting as the agent whose key opened the session.
struct ServerGuard {
    state: AppState,
    caller: Principal,
}

fn failure(e: Error) -> GuardFailure {
    GuardFailure(crate::error::public_message(&e))
}

impl Guard for ServerGuard {
    async fn check(&self, call: &McpCall) -> Result<ToolDecision, GuardFailure> {
        // The same request `countersign mcp wrap` sends, so both paths are checked alike.
        match guard::check_tool(&self.state, &self.caller, call.tool_request(), None)
            .await
            .map_err(failure)?
        {
            Answer::Fresh(decision) => Ok(decision),
            // Without an idempotency key nothing is replayed.
            Answer::Replayed(_) => Err(GuardFailure("unexpected replayed answer".into())),
        }
    }

    async fn wait(
        &self,
        approval_id: &str,
        wait: Duration,
    ) -> Result<GuardApprovalView, GuardFailure> {
        let state = &self.state;
        let mut request = service::visible(state, &self.caller, Face::Guard, approval_id)
            .await
            .map_err(failure)?;
        let wait = wait.min(guard::max_wait(state, Some(wait.as_secs())));
        if !wait.is_zero() {
            request = service::wait_for_decision(state, &self.caller.tenant_id, request, wait)
                .await
                .map_err(failure)?;
        }
        guard::view(state, request).await.map_err(failure)
    }

    async fn cancel(&self, approval_id: &str) -> Result<(), GuardFailure> {
        match guard::cancel(&self.state, &self.caller, approval_id).await {
            Ok(_) | Err(Error::AlreadyDecided { .. }) => Ok(()),
            Err(e) => Err(failure(e)),
        }
    }

    fn review_url(&self, approval_id: &str) -> Option<String> {
        Some(format!(
            "{}/ui/requests/{approval_id}",
            self.state.issuer.trim_end_matches('/')
        ))
    }
}

/// `GET|POST|DELETE /mcp/{id}`: one streamable-HTTP MCP endpoint per registered upstream.
pub async fn endpoint(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(server_id): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    caller.require_agent()?;
    let server = state
        .store
        .get_mcp_server(&caller.tenant_id, &server_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no MCP server {server_id:?}")))?;
    let gateway = state.mcp.clone();
    let owner = Owner {
        tenant_id: caller.tenant_id.clone(),
        key_id: caller.key_id.clone(),
        server_id: server_id.clone(),
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(session) = &session
        && gateway.owners.lock().get(session) != Some(&owner)
    {
        // Someone else's session, or one that ended: the client starts a new one.
        return Err(Error::NotFound("no such MCP session".into()).into());
    }
    let upstream = Upstream::Http(HttpUpstream {
        url: server.url,
        headers: server.headers,
        client: gateway.client.clone(),
    });
    let guard = Arc::new(ServerGuard {
        state: state.clone(),
        caller,
    });
    let origin = SessionOrigin {
        server: server_id,
        session_id: format!("mcp-{}", uuid::Uuid::new_v4()),
    };
    let config = StreamableHttpServerConfig::default()
        // Agents authenticate with a bearer key, so a rebinding page gains nothing; the
        // server is reached under whatever name its operator chose.
        .disable_allowed_hosts()
        .with_cancellation_token(gateway.stopped.child_token());
    let service = StreamableHttpService::new(
        move || Ok(Proxy::new(guard.clone(), upstream.clone(), origin.clone())),
        gateway.sessions.clone(),
        config,
    );
    let response = service.handle(request).await;
    if session.is_none()
        && let Some(created) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        gateway.forget_closed_sessions().await;
        gateway.owners.lock().insert(created.to_string(), owner);
    }
    Ok(response.map(Body::new).into_response())
}
