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
        let http = reqwest::Client::builder()
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
        let mut builder = self
            .request(Method::GET, "/ciba/token")?
            .query(&[("authReqId", auth_req_id)]);
        if let Some(w) = wait_seconds {
            builder = builder.query(&[("waitSeconds", w)]);
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
