//! A typed client for the Countersign HTTP API, used by the command line and the tests.
use std::time::Duration;

use countersign_proto::admin::{
    AgentList, AgentView, ApiKeyCreated, ApiKeyList, ApiKeyView, CreateAgent, CreateApiKey,
    CreateInvitation, CreateSignInLink, CreateTenant, CreateUser, InvitationList, LoginLinkCreated,
    LoginLinkView, TenantCreated, UserList, UserView,
};
use countersign_proto::admin::{RotateSigningKey, SigningKeyView};
use countersign_proto::approvals::{ApprovalList, ApprovalView, ApproveBody, DenyBody};
use countersign_proto::audit::{AuditPage, AuditVerifyReport};
use countersign_proto::ciba::{
    ApproveRequest, AuthorizeRequest, AuthorizeResponse, DecisionResponse, DenyRequest,
    TokenResponse,
};
use countersign_proto::guard::{
    CommentBody, EvaluateRequest, GrantResponse, GroupInput, GroupList, GroupView,
    GuardApprovalView, GuardSettings, History, HistoryQuery, PolicyInput, PolicyList, PolicyView,
    ReasonBody, RoutingRules, ToolDecision, ToolRequest,
};
use countersign_proto::mcp::{CreateMcpServer, McpServerList, McpServerView, UpdateMcpServer};
use countersign_proto::oidc::{
    CreateOidcClient, OidcClientCreated, OidcClientList, OidcClientView, SetUserCode,
};
use countersign_proto::{ErrorBody, HealthResponse};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        current_status: Option<String>,
    },
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected answer ({status}): {body}")]
    Unexpected { status: u16, body: String },
    #[error("bad URL: {0}")]
    Url(#[from] url::ParseError),
}

impl ClientError {
    /// The stable error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Http(e) => e.status().map(|s| s.as_u16()),
            ClientError::Url(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

/// Query of `/v1/approvals`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApprovalFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Client {
    pub fn new(base_url: &str, key: Option<String>) -> Result<Client> {
        Client::with_headers(base_url, key, reqwest::header::HeaderMap::new())
    }

    /// A client for the command line: decisions it sends are recorded with channel `cli`.
    pub fn for_cli(base_url: &str, key: Option<String>) -> Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-countersign-client",
            reqwest::header::HeaderValue::from_static("cli"),
        );
        Client::with_headers(base_url, key, headers)
    }

    fn with_headers(
        base_url: &str,
        key: Option<String>,
        headers: reqwest::header::HeaderMap,
    ) -> Result<Client> {
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            base: Url::parse(base_url)?,
            key,
        })
    }

    /// The same client acting with another key.
    pub fn with_key(&self, key: impl Into<String>) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            key: Some(key.into()),
        }
    }

    /// The key this client acts with.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let url = self.base.join(path)?;
        let mut builder = self.http.request(method, url);
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key);
        }
        Ok(builder)
    }

    async fn send<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        let response = builder.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                status: status.as_u16(),
                body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
                current_status: body.error.current_status,
            }),
            Err(_) => Err(ClientError::Unexpected {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(Method::GET, path)?).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.request(Method::POST, path)?.json(body))
            .await
    }

    // ----- meta -----

    pub async fn health(&self) -> Result<HealthResponse> {
        self.get("/healthz").await
    }

    pub async fn ready(&self) -> Result<HealthResponse> {
        self.get("/readyz").await
    }

    pub async fn jwks(&self) -> Result<serde_json::Value> {
        self.get("/.well-known/jwks.json").await
    }

    // ----- admin -----

    pub async fn create_user(&self, email: &str, name: &str) -> Result<UserView> {
        let body = CreateUser {
            email: email.into(),
            name: name.into(),
            is_admin: false,
        };
        self.post("/v1/admin/users", &body).await
    }

    pub async fn list_users(&self) -> Result<UserList> {
        self.get("/v1/admin/users").await
    }

    pub async fn get_user(&self, id: &str) -> Result<UserView> {
        self.get(&format!("/v1/admin/users/{id}")).await
    }

    pub async fn disable_user(&self, id: &str) -> Result<UserView> {
        self.post(
            &format!("/v1/admin/users/{id}/disable"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_agent(&self, body: &CreateAgent) -> Result<AgentView> {
        self.post("/v1/admin/agents", body).await
    }

    pub async fn list_agents(&self) -> Result<AgentList> {
        self.get("/v1/admin/agents").await
    }

    pub async fn get_agent(&self, id: &str) -> Result<AgentView> {
        self.get(&format!("/v1/admin/agents/{id}")).await
    }

    pub async fn disable_agent(&self, id: &str) -> Result<AgentView> {
        self.post(
            &format!("/v1/admin/agents/{id}/disable"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_api_key(&self, body: &CreateApiKey) -> Result<ApiKeyCreated> {
        self.post("/v1/admin/api-keys", body).await
    }

    pub async fn list_api_keys(&self) -> Result<ApiKeyList> {
        self.get("/v1/admin/api-keys").await
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyView> {
        self.post(
            &format!("/v1/admin/api-keys/{id}/revoke"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_oidc_client(&self, body: &CreateOidcClient) -> Result<OidcClientCreated> {
        self.post("/v1/admin/oidc-clients", body).await
    }

    pub async fn list_oidc_clients(&self) -> Result<OidcClientList> {
        self.get("/v1/admin/oidc-clients").await
    }

    pub async fn get_oidc_client(&self, id: &str) -> Result<OidcClientView> {
        self.get(&format!("/v1/admin/oidc-clients/{id}")).await
    }

    pub async fn delete_oidc_client(&self, id: &str) -> Result<()> {
        self.send_empty(self.request(Method::DELETE, &format!("/v1/admin/oidc-clients/{id}"))?)
            .await
    }

    // ----- MCP servers -----

    pub async fn create_mcp_server(&self, body: &CreateMcpServer) -> Result<McpServerView> {
        self.post("/v1/admin/mcp-servers", body).await
    }

    pub async fn list_mcp_servers(&self) -> Result<McpServerList> {
        self.get("/v1/admin/mcp-servers").await
    }

    pub async fn get_mcp_server(&self, id: &str) -> Result<McpServerView> {
        self.get(&format!("/v1/admin/mcp-servers/{id}")).await
    }

    pub async fn update_mcp_server(
        &self,
        id: &str,
        body: &UpdateMcpServer,
    ) -> Result<McpServerView> {
        self.send(
            self.request(Method::PUT, &format!("/v1/admin/mcp-servers/{id}"))?
                .json(body),
        )
        .await
    }

    pub async fn delete_mcp_server(&self, id: &str) -> Result<()> {
        self.send_empty(self.request(Method::DELETE, &format!("/v1/admin/mcp-servers/{id}"))?)
            .await
    }

    pub async fn set_user_code(&self, user_id: &str, user_code: &str) -> Result<()> {
        let body = SetUserCode {
            user_code: user_code.into(),
        };
        self.send_empty(
            self.request(Method::PUT, &format!("/v1/admin/users/{user_id}/user-code"))?
                .json(&body),
        )
        .await
    }

    /// Invites a person to the dashboard; the answer holds the one-time link.
    pub async fn create_invitation(&self, body: &CreateInvitation) -> Result<LoginLinkCreated> {
        self.post("/v1/admin/invitations", body).await
    }

    pub async fn list_invitations(&self) -> Result<InvitationList> {
        self.get("/v1/admin/invitations").await
    }

    pub async fn revoke_invitation(&self, id: &str) -> Result<LoginLinkView> {
        self.post(
            &format!("/v1/admin/invitations/{id}/revoke"),
            &serde_json::json!({}),
        )
        .await
    }

    /// A one-time sign-in link for an existing user.
    pub async fn create_sign_in_link(&self, body: &CreateSignInLink) -> Result<LoginLinkCreated> {
        self.post("/v1/admin/sign-in-links", body).await
    }

    pub async fn create_tenant(&self, body: &CreateTenant) -> Result<TenantCreated> {
        self.post("/v1/admin/tenants", body).await
    }

    pub async fn rotate_signing_key(&self, algorithm: Option<String>) -> Result<SigningKeyView> {
        self.post(
            "/v1/admin/signing-keys/rotate",
            &RotateSigningKey { algorithm },
        )
        .await
    }

    // ----- the seed's agent API -----

    pub async fn ciba_authorize(&self, body: &AuthorizeRequest) -> Result<AuthorizeResponse> {
        self.post("/ciba/authorize", body).await
    }

    pub async fn ciba_token(
        &self,
        auth_req_id: &str,
        wait_seconds: Option<u64>,
    ) -> Result<TokenResponse> {
        self.ciba_token_for(auth_req_id, wait_seconds, None).await
    }

    /// Polls, asking for an access token whose audience is `resource` (RFC 8707).
    pub async fn ciba_token_for(
        &self,
        auth_req_id: &str,
        wait_seconds: Option<u64>,
        resource: Option<&str>,
    ) -> Result<TokenResponse> {
        let mut builder = self
            .request(Method::GET, "/ciba/token")?
            .query(&[("authReqId", auth_req_id)]);
        if let Some(w) = wait_seconds {
            builder = builder.query(&[("waitSeconds", w)]);
        }
        if let Some(r) = resource {
            builder = builder.query(&[("resource", r)]);
        }
        self.send(builder).await
    }

    pub async fn ciba_approve(&self, body: &ApproveRequest) -> Result<DecisionResponse> {
        self.post("/ciba/approve", body).await
    }

    pub async fn ciba_deny(&self, body: &DenyRequest) -> Result<DecisionResponse> {
        self.post("/ciba/deny", body).await
    }

    // ----- reviewers -----

    pub async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<ApprovalList> {
        self.send(self.request(Method::GET, "/v1/approvals")?.query(filter))
            .await
    }

    pub async fn get_approval(&self, id: &str) -> Result<ApprovalView> {
        self.get(&format!("/v1/approvals/{id}")).await
    }

    pub async fn approve(&self, id: &str, comment: Option<String>) -> Result<ApprovalView> {
        self.post(
            &format!("/v1/approvals/{id}/approve"),
            &ApproveBody { comment },
        )
        .await
    }

    pub async fn deny(&self, id: &str, reason: Option<String>) -> Result<ApprovalView> {
        self.post(&format!("/v1/approvals/{id}/deny"), &DenyBody { reason })
            .await
    }

    // ----- the guard (`/v1/guard/{proxy_id}`) -----

    fn guard_path(proxy_id: &str, rest: &str) -> String {
        format!("/v1/guard/{proxy_id}/{rest}")
    }

    pub async fn guard_tool(&self, proxy_id: &str, body: &ToolRequest) -> Result<ToolDecision> {
        self.post(&Self::guard_path(proxy_id, "tool"), body).await
    }

    pub async fn guard_evaluate(
        &self,
        proxy_id: &str,
        body: &EvaluateRequest,
    ) -> Result<ToolDecision> {
        self.post(&Self::guard_path(proxy_id, "policies/evaluate"), body)
            .await
    }

    pub async fn guard_approval(
        &self,
        proxy_id: &str,
        id: &str,
        wait: Option<u64>,
    ) -> Result<GuardApprovalView> {
        let mut builder = self.request(
            Method::GET,
            &Self::guard_path(proxy_id, &format!("approvals/{id}")),
        )?;
        if let Some(w) = wait {
            builder = builder.query(&[("wait", w)]);
        }
        self.send(builder).await
    }

    pub async fn guard_approve(
        &self,
        proxy_id: &str,
        id: &str,
        comment: Option<&str>,
    ) -> Result<GuardApprovalView> {
        let body = CommentBody {
            comment: comment.map(str::to_string),
        };
        self.post(
            &Self::guard_path(proxy_id, &format!("approvals/{id}/approve")),
            &body,
        )
        .await
    }

    pub async fn guard_reject(
        &self,
        proxy_id: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<GuardApprovalView> {
        let body = ReasonBody {
            reason: reason.map(str::to_string),
        };
        self.post(
            &Self::guard_path(proxy_id, &format!("approvals/{id}/reject")),
            &body,
        )
        .await
    }

    pub async fn guard_cancel(&self, proxy_id: &str, id: &str) -> Result<GuardApprovalView> {
        self.post(
            &Self::guard_path(proxy_id, &format!("approvals/{id}/cancel")),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn guard_grant(&self, proxy_id: &str, id: &str) -> Result<GrantResponse> {
        self.guard_grant_for(proxy_id, id, None).await
    }

    /// Redeems an approval for a grant whose audience is `resource` (RFC 8707).
    pub async fn guard_grant_for(
        &self,
        proxy_id: &str,
        id: &str,
        resource: Option<&str>,
    ) -> Result<GrantResponse> {
        let mut builder = self
            .request(
                Method::POST,
                &Self::guard_path(proxy_id, &format!("approvals/{id}/grant")),
            )?
            .json(&serde_json::json!({}));
        if let Some(r) = resource {
            builder = builder.query(&[("resource", r)]);
        }
        self.send(builder).await
    }

    // ----- grants -----

    /// RFC 7662 introspection: `{"active":false}` or `active: true` with the grant's claims;
    /// `consume` spends the grant.
    pub async fn introspect(&self, token: &str, consume: bool) -> Result<serde_json::Value> {
        let mut form = vec![("token", token)];
        if consume {
            form.push(("consume", "true"));
        }
        self.send(self.request(Method::POST, "/oauth/introspect")?.form(&form))
            .await
    }

    /// RFC 7009 revocation.
    pub async fn revoke_grant(&self, token: &str) -> Result<()> {
        let response = self
            .request(Method::POST, "/oauth/revoke")?
            .form(&[("token", token)])
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.bytes().await?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
                current_status: body.error.current_status,
            }),
            Err(_) => Err(ClientError::Unexpected {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    pub async fn guard_history(&self, proxy_id: &str, query: &HistoryQuery) -> Result<History> {
        let builder = self
            .request(
                Method::GET,
                &Self::guard_path(proxy_id, "approvals/history"),
            )?
            .query(query);
        self.send(builder).await
    }

    pub async fn create_policy(&self, proxy_id: &str, body: &PolicyInput) -> Result<PolicyView> {
        self.post(&Self::guard_path(proxy_id, "policies"), body)
            .await
    }

    pub async fn update_policy(
        &self,
        proxy_id: &str,
        id: &str,
        body: &PolicyInput,
    ) -> Result<PolicyView> {
        let builder = self
            .request(
                Method::PUT,
                &Self::guard_path(proxy_id, &format!("policies/{id}")),
            )?
            .json(body);
        self.send(builder).await
    }

    pub async fn list_policies(&self, proxy_id: &str) -> Result<PolicyList> {
        self.get(&Self::guard_path(proxy_id, "policies")).await
    }

    pub async fn get_policy(&self, proxy_id: &str, id: &str) -> Result<PolicyView> {
        self.get(&Self::guard_path(proxy_id, &format!("policies/{id}")))
            .await
    }

    pub async fn delete_policy(&self, proxy_id: &str, id: &str) -> Result<()> {
        let builder = self.request(
            Method::DELETE,
            &Self::guard_path(proxy_id, &format!("policies/{id}")),
        )?;
        self.send_empty(builder).await
    }

    pub async fn create_group(&self, proxy_id: &str, body: &GroupInput) -> Result<GroupView> {
        self.post(&Self::guard_path(proxy_id, "approval-groups"), body)
            .await
    }

    pub async fn update_group(
        &self,
        proxy_id: &str,
        id: &str,
        body: &GroupInput,
    ) -> Result<GroupView> {
        let builder = self
            .request(
                Method::PUT,
                &Self::guard_path(proxy_id, &format!("approval-groups/{id}")),
            )?
            .json(body);
        self.send(builder).await
    }

    pub async fn list_groups(&self, proxy_id: &str) -> Result<GroupList> {
        self.get(&Self::guard_path(proxy_id, "approval-groups"))
            .await
    }

    pub async fn get_group(&self, proxy_id: &str, id: &str) -> Result<GroupView> {
        self.get(&Self::guard_path(
            proxy_id,
            &format!("approval-groups/{id}"),
        ))
        .await
    }

    pub async fn delete_group(&self, proxy_id: &str, id: &str) -> Result<()> {
        let builder = self.request(
            Method::DELETE,
            &Self::guard_path(proxy_id, &format!("approval-groups/{id}")),
        )?;
        self.send_empty(builder).await
    }

    pub async fn put_routing_rules(
        &self,
        proxy_id: &str,
        body: &RoutingRules,
    ) -> Result<RoutingRules> {
        let builder = self
            .request(Method::PUT, &Self::guard_path(proxy_id, "routing-rules"))?
            .json(body);
        self.send(builder).await
    }

    pub async fn guard_settings(&self, proxy_id: &str) -> Result<GuardSettings> {
        self.get(&Self::guard_path(proxy_id, "settings")).await
    }

    pub async fn put_guard_settings(
        &self,
        proxy_id: &str,
        body: &GuardSettings,
    ) -> Result<GuardSettings> {
        let builder = self
            .request(Method::PUT, &Self::guard_path(proxy_id, "settings"))?
            .json(body);
        self.send(builder).await
    }

    async fn send_empty(&self, builder: RequestBuilder) -> Result<()> {
        let response = builder.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.bytes().await?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
                current_status: body.error.current_status,
            }),
            Err(_) => Err(ClientError::Unexpected {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    // ----- audit -----

    pub async fn audit_page(&self, cursor: Option<&str>, limit: Option<u32>) -> Result<AuditPage> {
        let mut builder = self.request(Method::GET, "/v1/audit")?;
        if let Some(c) = cursor {
            builder = builder.query(&[("cursor", c)]);
        }
        if let Some(l) = limit {
            builder = builder.query(&[("limit", l)]);
        }
        self.send(builder).await
    }

    pub async fn audit_verify(&self) -> Result<AuditVerifyReport> {
        self.get("/v1/audit/verify").await
    }
}
