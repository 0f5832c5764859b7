//! OpenID Connect CIBA: clients, the validated backchannel authentication request, the state
//! a CIBA request keeps next to its approval request, and the outbox that carries ping and
//! push callbacks.
use chrono::{DateTime, Duration, Utc};
use countersign_proto::{ApprovalStatus, ErrorCode};
use serde_json::{Value, json};

use crate::approval::{ApprovalRequest, DecisionRules, NewRequest, RequestKind, RequestLimits};
use crate::{Error, Result, canonical, ids, payload, secret, validate};

/// The CIBA grant type.
pub const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
/// The `client_assertion_type` of `private_key_jwt`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Outbox channels of CIBA callbacks.
pub const CHANNEL_PING: &str = "ciba_ping";
pub const CHANNEL_PUSH: &str = "ciba_push";
/// Longest binding message, in characters: it is shown on a device next to a code.
pub const MAX_BINDING_MESSAGE_CHARS: usize = 128;
/// Longest `client_notification_token` (RFC 6750 suggests the token stays short; at least
/// 128 bits are required).
pub const MAX_NOTIFICATION_TOKEN_CHARS: usize = 1024;
/// `slow_down` grows the interval by this many seconds.
pub const SLOW_DOWN_STEP_SECS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Poll,
    Ping,
    Push,
}

impl DeliveryMode {
    pub const ALL: [DeliveryMode; 3] = [DeliveryMode::Poll, DeliveryMode::Ping, DeliveryMode::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Poll => "poll",
            DeliveryMode::Ping => "ping",
            DeliveryMode::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryMode> {
        DeliveryMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 3] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::PrivateKeyJwt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<AuthMethod> {
        AuthMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn uses_secret(self) -> bool {
        self != AuthMethod::PrivateKeyJwt
    }
}

/// JWS algorithms accepted for client assertions and signed requests: the asymmetric ones
/// FAPI-CIBA allows. `none` and the HMAC family are never accepted (a shared secret cannot
/// prove who signed), nor RS256 (PKCS#1 v1.5 padding, which FAPI rules out).
pub const ASYMMETRIC_ALGS: &[&str] = &["PS256", "ES256", "EdDSA"];

/// An agent registered as an OpenID client; `client_id` is the agent's id.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcClient {
    pub client_id: String,
    pub tenant_id: String,
    pub auth_method: AuthMethod,
    /// SHA-256 of the client secret (secret methods only).
    pub secret_hash: Option<String>,
    /// The client's public keys (`private_key_jwt` and signed requests).
    pub jwks: Option<Value>,
    pub delivery_mode: DeliveryMode,
    pub notification_endpoint: Option<String>,
    pub request_signing_alg: Option<String>,
    pub user_code_parameter: bool,
    pub grant_types: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What an admin asks for when registering a client.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub auth_method: AuthMethod,
    pub jwks: Option<Value>,
    pub delivery_mode: DeliveryMode,
    pub notification_endpoint: Option<String>,
    pub request_signing_alg: Option<String>,
    pub user_code_parameter: bool,
    pub grant_types: Vec<String>,
}

/// A client record and, for secret methods, the secret to show once.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client: OidcClient,
    pub secret: Option<String>,
}

fn jwks_has_keys(jwks: &Value) -> bool {
    jwks.get("keys")
        .and_then(Value::as_array)
        .is_some_and(|keys| !keys.is_empty() && keys.iter().all(Value::is_object))
}

/// Validates a registration; the store checks that the agent exists and is active.
pub fn new_client(
    tenant_id: &str,
    agent_id: &str,
    reg: ClientRegistration,
    now: DateTime<Utc>,
) -> Result<NewClient> {
    if !ids::is_id(agent_id, ids::AGENT) {
        return Err(Error::invalid("`agent_id` must be an agent id (`agt_…`)"));
    }
    if let Some(jwks) = &reg.jwks {
        if !jwks_has_keys(jwks) {
            return Err(Error::invalid(
                "`jwks` must be a JWK Set: {\"keys\": [ {...}, ... ]} with at least one key",
            ));
        }
        if jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k.get("d").is_some() || k.get("k").is_some())
        {
            return Err(Error::invalid(
                "`jwks` must hold public keys only (no `d`, no symmetric `k`)",
            ));
        }
    }
    if reg.auth_method == AuthMethod::PrivateKeyJwt && reg.jwks.is_none() {
        return Err(Error::invalid(
            "`private_key_jwt` needs the client's `jwks`",
        ));
    }
    if let Some(alg) = &reg.request_signing_alg {
        if !ASYMMETRIC_ALGS.contains(&alg.as_str()) {
            return Err(Error::invalid(format!(
                "`backchannel_authentication_request_signing_alg` must be one of {}",
                ASYMMETRIC_ALGS.join(", ")
            )));
        }
        if reg.jwks.is_none() {
            return Err(Error::invalid(
                "signed authentication requests need the client's `jwks`",
            ));
        }
    }
    match (reg.delivery_mode, &reg.notification_endpoint) {
        (DeliveryMode::Poll, Some(_)) => {
            return Err(Error::invalid(
                "`backchannel_client_notification_endpoint` is only for ping and push",
            ));
        }
        (DeliveryMode::Ping | DeliveryMode::Push, None) => {
            return Err(Error::invalid(
                "ping and push need `backchannel_client_notification_endpoint`",
            ));
        }
        (_, Some(endpoint)) => notification_endpoint(endpoint)?,
        (DeliveryMode::Poll, None) => {}
    }
    for g in &reg.grant_types {
        validate::text("grant_types", g, 200)?;
    }
    let secret = reg.auth_method.uses_secret().then(secret::random_token);
    Ok(NewClient {
        client: OidcClient {
            client_id: agent_id.to_string(),
            tenant_id: tenant_id.to_string(),
            auth_method: reg.auth_method,
            secret_hash: secret.as_deref().map(secret::hash_secret),
            jwks: reg.jwks,
            delivery_mode: reg.delivery_mode,
            notification_endpoint: reg.notification_endpoint,
            request_signing_alg: reg.request_signing_alg,
            user_code_parameter: reg.user_code_parameter,
            grant_types: reg.grant_types,
            created_at: now,
        },
        secret,
    })
}

/// A notification endpoint must be an absolute http(s) URL without credentials or fragment.
/// (Whether it may point at private addresses is decided at delivery time, on the resolved
/// address.)
fn notification_endpoint(endpoint: &str) -> Result<()> {
    let ok = (endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        && endpoint.chars().count() <= 2000
        && !endpoint.contains('#')
        && !endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        && endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
            .is_some_and(|authority| !authority.is_empty() && !authority.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "`backchannel_client_notification_endpoint` must be an absolute http(s) URL without credentials or fragment",
        ))
    }
}

/// Who the request is about, as the client named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// A user id or an email address.
    LoginHint(String),
    /// The `sub` of an ID token we issued (already verified).
    IdTokenSubject(String),
}

/// The parameters of a backchannel authentication request, from the form or a signed request.
#[derive(Debug, Clone, Default)]
pub struct BcParams {
    pub scope: Option<String>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    pub login_hint_token: Option<String>,
    pub binding_message: Option<String>,
    pub user_code: Option<String>,
    /// As sent: a number or a string of digits.
    pub requested_expiry: Option<Value>,
    pub acr_values: Option<String>,
    pub client_notification_token: Option<String>,
    /// Parsed JSON (RFC 9396), not yet checked against the configured types.
    pub authorization_details: Option<Value>,
}

fn oidc_error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::coded(code, message)
}

/// The checks that need no store: scope, hints, binding message, expiry, notification token.
/// Returns the scope and the requested expiry in seconds.
pub fn check_bc_params(
    params: &BcParams,
    client: &OidcClient,
    limits: &RequestLimits,
) -> Result<(String, i64)> {
    let scope = params.scope.as_deref().unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(oidc_error(
            ErrorCode::InvalidScope,
            "`scope` must include `openid`",
        ));
    }
    validate::text("scope", scope, limits.max_scope_chars)
        .map_err(|e| oidc_error(ErrorCode::InvalidScope, e.to_string()))?;
    let hints = [
        params.login_hint.is_some(),
        params.id_token_hint.is_some(),
        params.login_hint_token.is_some(),
    ]
    .into_iter()
    .filter(|h| *h)
    .count();
    if hints != 1 {
        return Err(oidc_error(
            ErrorCode::InvalidRequest,
            "exactly one of `login_hint`, `id_token_hint` and `login_hint_token` is required",
        ));
    }
    if params.login_hint_token.is_some() {
        return Err(oidc_error(
            ErrorCode::InvalidRequest,
            "`login_hint_token` is not supported; use `login_hint` (a user id or email) or `id_token_hint`",
        ));
    }
    if let Some(message) = &params.binding_message {
        let chars = message.chars().count();
        if message.trim().is_empty()
            || chars > MAX_BINDING_MESSAGE_CHARS
            || message.chars().any(validate::is_hidden)
        {
            return Err(oidc_error(
                ErrorCode::InvalidBindingMessage,
                format!(
                    "`binding_message` must be 1 to {MAX_BINDING_MESSAGE_CHARS} printable characters, without control, bidirectional or invisible formatting characters"
                ),
            ));
        }
    }
    match (&params.client_notification_token, client.delivery_mode) {
        (None, DeliveryMode::Ping | DeliveryMode::Push) => {
            return Err(oidc_error(
                ErrorCode::InvalidRequest,
                "`client_notification_token` is required for ping and push clients",
            ));
        }
        (Some(token), DeliveryMode::Ping | DeliveryMode::Push) => {
            // RFC 6750 token characters; at least 128 bits of entropy means at least 22
            // base64url characters.
            let ok = token.len() >= 22
                && token.len() <= MAX_NOTIFICATION_TOKEN_CHARS
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
            if !ok {
                return Err(oidc_error(
                    ErrorCode::InvalidRequest,
                    "`client_notification_token` must be 22 to 1024 characters of a bearer token",
                ));
            }
        }
        (_, DeliveryMode::Poll) => {}
    }
    if client.user_code_parameter && params.user_code.is_none() {
        return Err(oidc_error(
            ErrorCode::MissingUserCode,
            "this client requires `user_code`",
        ));
    }
    let expiry = match &params.requested_expiry {
        None => limits.default_expiry_secs,
        Some(v) => {
            let parsed = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse().ok()
                }
                _ => None,
            };
            match parsed {
                Some(n) if n >= limits.min_expiry_secs && n <= limits.max_expiry_secs => n,
                _ => {
                    return Err(oidc_error(
                        ErrorCode::InvalidRequest,
                        format!(
                            "`requested_expiry` must be a whole number of seconds between {} and {}",
                            limits.min_expiry_secs, limits.max_expiry_secs
                        ),
                    ));
                }
            }
        }
    };
    Ok((scope.to_string(), expiry))
}

/// The state a CIBA request keeps next to its approval request.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcRequestState {
    pub approval_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub delivery_mode: DeliveryMode,
    pub scope: String,
    pub acr: Option<String>,
    pub interval_secs: i64,
    pub last_poll_at: Option<DateTime<Utc>>,
}

/// A callback registered with a request: every state change of the request puts one outbox
/// row per subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub channel: String,
    pub target: String,
    pub secret: Option<String>,
}

/// Everything stored when a CIBA request is created.
#[derive(Debug, Clone)]
pub struct NewOidcRequest {
    pub new: NewRequest,
    pub state: OidcRequestState,
    pub subscriptions: Vec<Subscription>,
}

/// Input of [`new_oidc_request`], checked already.
pub struct OidcRequestInput<'a> {
    pub client: &'a OidcClient,
    pub user_id: &'a str,
    pub scope: String,
    pub expiry_secs: i64,
    pub binding_message: Option<String>,
    pub authorization_details: Option<Value>,
    pub acr: Option<String>,
    pub client_notification_token: Option<String>,
    pub interval_secs: i64,
}

/// Builds the approval request of a CIBA call; `derive_auth_req_id` turns the approval id into
/// the `auth_req_id` (a keyed hash, so that it can be recomputed for a ping and never stored).
pub fn new_oidc_request(
    input: OidcRequestInput<'_>,
    derive_auth_req_id: impl Fn(&str) -> String,
    now: DateTime<Utc>,
) -> Result<NewOidcRequest> {
    let mut context = serde_json::Map::new();
    if let Some(details) = &input.authorization_details {
        // RFC 9396's error code, with the message that names the field.
        payload::check("authorization_details", details)
            .map_err(|e| oidc_error(ErrorCode::InvalidAuthorizationDetails, e.to_string()))?;
        context.insert("authorization_details".into(), details.clone());
    }
    let context = Value::Object(context);
    let id = ids::new_id(ids::APPROVAL);
    let auth_req_id = derive_auth_req_id(&id);
    let auth_req_hash = secret::hash_secret(&auth_req_id);
    let client = input.client;
    let subscriptions = match (client.delivery_mode, &client.notification_endpoint) {
        (DeliveryMode::Ping, Some(target)) => vec![Subscription {
            channel: CHANNEL_PING.into(),
            target: target.clone(),
            secret: input.client_notification_token.clone(),
        }],
        (DeliveryMode::Push, Some(target)) => vec![Subscription {
            channel: CHANNEL_PUSH.into(),
            target: target.clone(),
            secret: input.client_notification_token.clone(),
        }],
        _ => Vec::new(),
    };
    Ok(NewOidcRequest {
        new: NewRequest {
            request: ApprovalRequest {
                id: id.clone(),
                tenant_id: client.tenant_id.clone(),
                kind: RequestKind::Oidc,
                agent_id: client.client_id.clone(),
                user_id: Some(input.user_id.to_string()),
                scope: input.scope.clone(),
                binding_message: input.binding_message.unwrap_or_default(),
                context_sha256: canonical::canonical_sha256(&context)?,
                context,
                status: ApprovalStatus::Pending,
                created_at: now,
                expires_at: now + Duration::seconds(input.expiry_secs),
                decided_at: None,
                decided_by: None,
                comment: None,
                token_issued_at: None,
                tool: None,
                rules: DecisionRules::default(),
            },
            auth_req_id: Some(auth_req_id),
            auth_req_hash: Some(auth_req_hash),
            idempotency: None,
        },
        state: OidcRequestState {
            approval_id: id,
            tenant_id: client.tenant_id.clone(),
            client_id: client.client_id.clone(),
            delivery_mode: client.delivery_mode,
            scope: input.scope,
            acr: input.acr,
            interval_secs: input.interval_secs,
            last_poll_at: None,
        },
        subscriptions,
    })
}

/// The answer to one token-endpoint poll of a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRecord {
    /// The client polled sooner than `interval` after its previous poll.
    pub too_fast: bool,
    pub interval_secs: i64,
}

/// A request's polling state as last read: its interval and when it was last polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSeen {
    pub interval_secs: i64,
    pub last_poll_ms: Option<i64>,
}

impl OidcRequestState {
    pub fn poll_seen(&self) -> PollSeen {
        PollSeen {
            interval_secs: self.interval_secs,
            last_poll_ms: self.last_poll_at.map(|t| t.timestamp_millis()),
        }
    }
}

impl PollRecord {
    /// A poll at `at_ms` of a request with this interval, last polled at `last_poll_ms`:
    /// polling sooner than the interval grows it by one `slow_down` step (RFC 8628 §3.5).
    pub fn at(interval_secs: i64, last_poll_ms: Option<i64>, at_ms: i64) -> PollRecord {
        let too_fast = last_poll_ms.is_some_and(|last| at_ms - last < interval_secs * 1000);
        PollRecord {
            too_fast,
            interval_secs: if too_fast {
                interval_secs + SLOW_DOWN_STEP_SECS
            } else {
                interval_secs
            },
        }
    }
}

/// The RFC 9396 details of a request, as kept in its context.
pub fn authorization_details(request: &ApprovalRequest) -> Vec<Value> {
    request
        .context
        .get("authorization_details")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// One callback waiting in the outbox (claimed for delivery).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub tenant_id: String,
    pub approval_id: String,
    pub channel: String,
    pub target: String,
    pub secret: Option<String>,
    /// The status the request moved to (or the notification event).
    pub event: String,
    /// Attempts including the one just claimed.
    pub attempts: i64,
    /// The person or webhook endpoint a notification is for.
    pub recipient: Option<String>,
    /// What a notification needs beyond the request (JSON).
    pub payload: Option<Value>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    Delivered {
        at: DateTime<Utc>,
        /// The HTTP status (or SMTP reply code) of the attempt.
        status_code: Option<i64>,
        /// What later updates of the message need (a Slack channel and `ts`).
        external_ref: Option<String>,
    },
    Retry {
        at: DateTime<Utc>,
        error: String,
        status_code: Option<i64>,
    },
    Failed {
        at: DateTime<Utc>,
        error: String,
        status_code: Option<i64>,
    },
}

impl OutboxOutcome {
    /// The stored state, next attempt time, delivery time, error, status code and reference.
    #[allow(clippy::type_complexity)]
    pub fn columns(
        self,
    ) -> (
        &'static str,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<i64>,
        Option<String>,
    ) {
        match self {
            OutboxOutcome::Delivered {
                at,
                status_code,
                external_ref,
            } => ("delivered", at, Some(at), None, status_code, external_ref),
            OutboxOutcome::Retry {
                at,
                error,
                status_code,
            } => ("pending", at, None, Some(error), status_code, None),
            OutboxOutcome::Failed {
                at,
                error,
                status_code,
            } => ("failed", at, None, Some(error), status_code, None),
        }
    }
}

/// Exponential backoff for attempt `n` (1-based): 1 s, 2 s, 4 s, … capped at 5 minutes.
pub fn backoff(attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 20) - 1;
    Duration::seconds((1i64 << exp).min(300))
}

/// The error payload of a push for a request that ended without approval.
pub fn push_error_payload(auth_req_id: &str, status: ApprovalStatus) -> Value {
    match status {
        ApprovalStatus::Expired => json!({
            "auth_req_id": auth_req_id,
            "error": "expired_token",
            "error_description": "the request expired before the user decided",
        }),
        _ => json!({
            "auth_req_id": auth_req_id,
            "error": "access_denied",
            "error_description": "the user denied the request",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_sooner_than_the_interval_slows_down() {
        let first = PollRecord::at(5, None, 1_000);
        assert_eq!(
            first,
            PollRecord {
                too_fast: false,
                interval_secs: 5
            }
        );
        let early = PollRecord::at(5, Some(1_000), 5_999);
        assert_eq!(
            early,
            PollRecord {
                too_fast: true,
                interval_secs: 5 + SLOW_DOWN_STEP_SECS
            }
        );
        let on_time = PollRecord::at(5, Some(1_000), 6_000);
        assert_eq!(
            on_time,
            PollRecord {
                too_fast: false,
                interval_secs: 5
            }
        );
    }

    fn client(mode: DeliveryMode) -> OidcClient {
        new_client(
            "t",
            &ids::new_id(ids::AGENT),
            ClientRegistration {
                auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                delivery_mode: mode,
                notification_endpoint: (mode != DeliveryMode::Poll)
                    .then(|| "https://client.example.com/cb".to_string()),
                request_signing_alg: None,
                user_code_parameter: false,
                grant_types: vec![CIBA_GRANT.into()],
            },
            Utc::now(),
        )
        .unwrap()
        .client
    }

    fn params() -> BcParams {
        BcParams {
            scope: Some("openid payments".into()),
            login_hint: Some("alice@example.com".into()),
            ..Default::default()
        }
    }

    fn code(r: Result<(String, i64)>) -> ErrorCode {
        r.unwrap_err().code()
    }

    #[test]
    fn bc_params_rules() {
        let limits = RequestLimits::default();
        let poll = client(DeliveryMode::Poll);
        assert_eq!(
            check_bc_params(&params(), &poll, &limits).unwrap(),
            ("openid payments".to_string(), 300)
        );
        let mut p = params();
        p.scope = Some("payments".into());
        assert_eq!(
            code(check_bc_params(&p, &poll, &limits)),
            ErrorCode::InvalidScope
        );
        let mut p = params();
        p.id_token_hint = Some("x".into());
        assert_eq!(
            code(check_bc_params(&p, &poll, &limits)),
            ErrorCode::InvalidRequest
        );
        let mut p = params();
        p.login_hint = None;
        assert_eq!(
            code(check_bc_params(&p, &poll, &limits)),
            ErrorCode::InvalidRequest
        );
        let mut p = params();
        p.binding_message = Some("x".repeat(200));
        assert_eq!(
            code(check_bc_params(&p, &poll, &limits)),
            ErrorCode::InvalidBindingMessage
        );
        let mut p = params();
        p.requested_expiry = Some(json!("120"));
        assert_eq!(check_bc_params(&p, &poll, &limits).unwrap().1, 120);
        p.requested_expiry = Some(json!("12x"));
        assert_eq!(
            code(check_bc_params(&p, &poll, &limits)),
            ErrorCode::InvalidRequest
        );
        let ping = client(DeliveryMode::Ping);
        assert_eq!(
            code(check_bc_params(&params(), &ping, &limits)),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn registration_rules() {
        let reg = |mode, endpoint: Option<&str>| ClientRegistration {
            auth_method: AuthMethod::PrivateKeyJwt,
            jwks: None,
            delivery_mode: mode,
            notification_endpoint: endpoint.map(str::to_string),
            request_signing_alg: None,
            user_code_parameter: false,
            grant_types: vec![],
        };
        let agent = ids::new_id(ids::AGENT);
        assert!(new_client("t", &agent, reg(DeliveryMode::Poll, None), Utc::now()).is_err());
        let mut ok = reg(DeliveryMode::Ping, Some("https://x.example/cb"));
        ok.jwks = Some(json!({"keys": [{"kty": "EC"}]}));
        assert!(
            new_client("t", &agent, ok.clone(), Utc::now())
                .unwrap()
                .secret
                .is_none()
        );
        ok.notification_endpoint = Some("https://user@x.example/cb".into());
        assert!(new_client("t", &agent, ok, Utc::now()).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(1));
        assert_eq!(backoff(4), Duration::seconds(8));
        assert_eq!(backoff(30), Duration::seconds(300));
    }
}
