//! The CIBA flows, HTTP-free: the handlers parse and map, this decides.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use countersign_core::approval::{ApprovalRequest, RequestKind, RequestRef};
use countersign_core::audit::{Actor, ActorKind};
use countersign_core::grant::{self, GrantClaims, IdTokenClaims};
use countersign_core::idempotency::IdempotencyKey;
use countersign_core::oidc::{
    self, AuthMethod, BcParams, CIBA_GRANT, DeliveryMode, OidcClient, OidcRequestInput,
    OidcRequestState,
};
use countersign_core::{Error, Result, ids, secret};
use countersign_proto::{ApprovalStatus, ErrorCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256, Sha512};

use super::client_auth::{AUTH_PARAMS, audiences, authenticate};
use super::form::FormParams;
use super::jwt::{ClientJwtRules, verify_client_jwt, verify_own_id_token};
use super::{ACR_HUMAN_APPROVAL, BC_AUTHORIZE_PATH, JWKS_PATH, TOKEN_PATH};
use crate::idempotency::{self, Answer, Retry};
use crate::state::AppState;

/// The discovery document.
pub fn discovery(state: &AppState) -> Value {
    let issuer = &*state.issuer;
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "backchannel_authentication_endpoint": format!("{issuer}{BC_AUTHORIZE_PATH}"),
        "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
        "backchannel_authentication_request_signing_alg_values_supported": oidc::ASYMMETRIC_ALGS,
        "backchannel_user_code_parameter_supported": true,
        "grant_types_supported": [CIBA_GRANT],
        "response_types_supported": [],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["public"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr"],
        "acr_values_supported": [ACR_HUMAN_APPROVAL],
        "token_endpoint_auth_methods_supported": AuthMethod::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_signing_alg_values_supported": oidc::ASYMMETRIC_ALGS,
        "id_token_signing_alg_values_supported": [state.signer.current().algorithm()],
        "authorization_details_types_supported": state.oidc.detail_types(),
        "request_object_signing_alg_values_supported": oidc::ASYMMETRIC_ALGS,
        "request_parameter_supported": true,
        "claims_parameter_supported": false,
    })
}

/// The answer of the backchannel authentication endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BcResponse {
    pub auth_req_id: String,
    pub expires_in: i64,
    /// Absent for push clients, which never poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::invalid(format!(
            "`{name}` in the signed request must be a string"
        ))),
    }
}

/// The request parameters, from the signed `request` or from the form.
async fn bc_params(state: &AppState, client: &OidcClient, form: &FormParams) -> Result<BcParams> {
    if let Some(request) = form.get("request")? {
        let mut outside = form.names_except(AUTH_PARAMS).filter(|n| *n != "request");
        if let Some(name) = outside.next() {
            return Err(Error::invalid(format!(
                "with a signed `request`, every parameter must be inside it (found `{name}` outside)"
            )));
        }
        let audiences = audiences(state);
        let claims = verify_client_jwt(
            state,
            client,
            request,
            ClientJwtRules {
                audiences: &audiences,
                subject_is_client: false,
                require_iat_nbf: true,
                registered_alg: client.request_signing_alg.as_deref(),
                code: ErrorCode::InvalidRequest,
                what: "signed authentication request",
            },
        )
        .await?;
        let details = match claims.get("authorization_details") {
            None | Some(Value::Null) => None,
            // A JSON string is accepted too, as in the form encoding.
            Some(Value::String(s)) => Some(parse_details(s)?),
            Some(v) => Some(v.clone()),
        };
        return Ok(BcParams {
            scope: string_claim(&claims, "scope")?,
            login_hint: string_claim(&claims, "login_hint")?,
            id_token_hint: string_claim(&claims, "id_token_hint")?,
            login_hint_token: string_claim(&claims, "login_hint_token")?,
            binding_message: string_claim(&claims, "binding_message")?,
            user_code: string_claim(&claims, "user_code")?,
            requested_expiry: claims
                .get("requested_expiry")
                .cloned()
                .filter(|v| !v.is_null()),
            acr_values: string_claim(&claims, "acr_values")?,
            client_notification_token: string_claim(&claims, "client_notification_token")?,
            authorization_details: details,
        });
    }
    if client.request_signing_alg.is_some() {
        return Err(Error::invalid(
            "this client registered a request signing algorithm: send the parameters as a signed `request`",
        ));
    }
    Ok(BcParams {
        scope: form.owned("scope")?,
        login_hint: form.owned("login_hint")?,
        id_token_hint: form.owned("id_token_hint")?,
        login_hint_token: form.owned("login_hint_token")?,
        binding_message: form.owned("binding_message")?,
        user_code: form.owned("user_code")?,
        requested_expiry: form.owned("requested_expiry")?.map(Value::String),
        acr_values: form.owned("acr_values")?,
        client_notification_token: form.owned("client_notification_token")?,
        authorization_details: form
            .get("authorization_details")?
            .map(parse_details)
            .transpose()?,
    })
}

fn parse_details(raw: &str) -> Result<Value> {
    serde_json::from_str(raw).map_err(|e| {
        Error::coded(
            ErrorCode::InvalidAuthorizationDetails,
            format!("`authorization_details` is not JSON: {e}"),
        )
    })
}

/// The user a hint names, if they are an active reviewer of the client's tenant.
async fn resolve_user(state: &AppState, client: &OidcClient, params: &BcParams) -> Result<String> {
    let unknown = |what: &str| {
        Error::coded(
            ErrorCode::UnknownUserId,
            format!("{what} does not name an active user of this tenant"),
        )
    };
    let tenant = &client.tenant_id;
    let user = if let Some(hint) = &params.login_hint {
        if ids::is_id(hint, ids::USER) {
            state.store.get_user(tenant, hint).await?
        } else if hint.contains('@') && hint.len() <= 254 {
            let email = hint.trim().to_lowercase();
            state.store.find_user_by_email(tenant, &email).await?
        } else {
            None
        }
        .filter(|u| !u.disabled)
        .ok_or_else(|| unknown("`login_hint`"))?
    } else if let Some(token) = &params.id_token_hint {
        let (sub, aud) = verify_own_id_token(state, token)?;
        if !aud.contains(&client.client_id) {
            return Err(Error::invalid(
                "`id_token_hint` was issued to another client",
            ));
        }
        state
            .store
            .get_user(tenant, &sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| unknown("`id_token_hint`"))?
    } else {
        return Err(Error::invalid("a hint is required"));
    };
    Ok(user.id)
}

/// `POST /oidc/bc-authorize`. Under an idempotency key, a retry gets the first answer; the
/// body is compared without its client authentication (an assertion is single-use, so a
/// retry carries a fresh one).
pub async fn bc_authorize(
    state: &AppState,
    form: &FormParams,
    authorization: Option<&str>,
    key: Option<IdempotencyKey>,
) -> Result<Answer<BcResponse>> {
    let client = authenticate(state, form, authorization).await?;
    if !client.grant_types.iter().any(|g| g == CIBA_GRANT) {
        return Err(Error::coded(
            ErrorCode::UnauthorizedClient,
            format!("this client is not registered for the {CIBA_GRANT} grant"),
        ));
    }
    let retry = key.map(|key| {
        Retry::new(
            key,
            &client.tenant_id,
            format!("client:{}", client.client_id),
            "POST /oidc/bc-authorize",
            &form.canonical_except(AUTH_PARAMS),
        )
    });
    if let Some(retry) = &retry
        && let Some(replay) = retry.earlier(state).await?
    {
        return Ok(Answer::Replayed(replay));
    }
    let params = bc_params(state, &client, form).await?;
    let (scope, expiry) = oidc::check_bc_params(&params, &client, &state.limits)?;
    let user_id = resolve_user(state, &client, &params).await?;
    if client.user_code_parameter {
        // Guessing user codes is slow: a client that failed too often waits, even with the
        // right one.
        let guesses = format!("user_code:{}:{}", client.tenant_id, client.client_id);
        state.throttle.check_failures(&guesses)?;
        let given = params.user_code.as_deref().unwrap_or_default();
        let stored = state
            .store
            .user_code_hash(&client.tenant_id, &user_id)
            .await?;
        if stored.as_deref() != Some(secret::hash_secret(given).as_str()) {
            state.throttle.record_failure(&guesses);
            return Err(Error::coded(
                ErrorCode::InvalidUserCode,
                "the `user_code` is not this user's",
            ));
        }
    }
    let details = params
        .authorization_details
        .as_ref()
        .map(|d| state.oidc.check_authorization_details(d))
        .transpose()?;
    let acr = params.acr_values.as_deref().and_then(|values| {
        values
            .split(' ')
            .find(|v| *v == ACR_HUMAN_APPROVAL)
            .map(str::to_string)
    });
    let interval = state.settings.requests.poll_interval_secs;
    let now = state.clock.now();
    let mut new = oidc::new_oidc_request(
        OidcRequestInput {
            client: &client,
            user_id: &user_id,
            scope,
            expiry_secs: expiry,
            binding_message: params.binding_message.clone(),
            authorization_details: details.map(Value::Array),
            acr,
            client_notification_token: params.client_notification_token.clone(),
            interval_secs: interval,
        },
        |id| state.oidc.auth_req_id(id),
        now,
    )?;
    crate::throttle::check_pending(state, &client.tenant_id, &client.client_id).await?;
    let answer = BcResponse {
        auth_req_id: new.new.auth_req_id.clone().unwrap_or_default(),
        expires_in: new.new.request.expires_in(now),
        interval: (client.delivery_mode != DeliveryMode::Push).then_some(interval),
    };
    if let Some(retry) = &retry {
        new.new.idempotency = Some(retry.remember(200, &answer, now)?);
    }
    let actor = Actor::new(ActorKind::Agent, &client.client_id);
    let request = match state.store.create_oidc_request(new, actor).await {
        Ok(request) => request,
        Err(e) if idempotency::is_key_in_use(&e) => match &retry {
            Some(retry) => return Ok(Answer::Replayed(retry.after_conflict(state).await?)),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    crate::after_commit::announce(state, crate::after_commit::Committed::Created(&request));
    Ok(Answer::Fresh(answer))
}

fn token_error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::coded(code, message)
}

/// `POST /oidc/token` with the CIBA grant.
pub async fn token(
    state: &AppState,
    form: &FormParams,
    authorization: Option<&str>,
) -> Result<Value> {
    let client = authenticate(state, form, authorization).await?;
    match form.get("grant_type")? {
        None => return Err(Error::invalid("`grant_type` is required")),
        Some(CIBA_GRANT) => {}
        Some(other) => {
            return Err(token_error(
                ErrorCode::UnsupportedGrantType,
                format!("`grant_type` {other:?} is not supported; use {CIBA_GRANT}"),
            ));
        }
    }
    if !client.grant_types.iter().any(|g| g == CIBA_GRANT) {
        return Err(token_error(
            ErrorCode::UnauthorizedClient,
            format!("this client is not registered for the {CIBA_GRANT} grant"),
        ));
    }
    if client.delivery_mode == DeliveryMode::Push {
        return Err(token_error(
            ErrorCode::UnauthorizedClient,
            "push clients receive their tokens at their notification endpoint",
        ));
    }
    let auth_req_id = form
        .get("auth_req_id")?
        .ok_or_else(|| Error::invalid("`auth_req_id` is required"))?;
    let invalid_grant = || {
        token_error(
            ErrorCode::InvalidGrant,
            "unknown or already redeemed `auth_req_id`",
        )
    };
    if !secret::looks_like_token(auth_req_id) {
        return Err(invalid_grant());
    }
    let request = state
        .store
        .find_request(
            &client.tenant_id,
            &RequestRef::AuthReqHash(secret::hash_secret(auth_req_id)),
        )
        .await?
        .filter(|r| r.kind == RequestKind::Oidc && r.agent_id == client.client_id)
        .ok_or_else(invalid_grant)?;
    let oidc_state = state
        .store
        .get_oidc_request(&client.tenant_id, &request.id)
        .await?
        .ok_or_else(invalid_grant)?;
    // RFC 8707: the access token's audience; one that cannot be granted is refused at once.
    let audience = crate::service::grant_audience(state, &request, form.get("resource")?).await?;
    let now = state.clock.now();
    match request.status_at(now) {
        ApprovalStatus::Pending => {
            let poll = state
                .store
                .record_oidc_poll(&request.id, oidc_state.poll_seen(), now)
                .await?;
            if poll.too_fast {
                Err(token_error(
                    ErrorCode::SlowDown,
                    format!(
                        "polling too fast; wait at least {} seconds between polls",
                        poll.interval_secs
                    ),
                ))
            } else {
                Err(token_error(
                    ErrorCode::AuthorizationPending,
                    "the user has not decided yet",
                ))
            }
        }
        ApprovalStatus::Expired => Err(token_error(
            ErrorCode::ExpiredToken,
            "the request expired before the user decided",
        )),
        ApprovalStatus::Rejected | ApprovalStatus::Cancelled => Err(token_error(
            ErrorCode::AccessDenied,
            "the user denied the request",
        )),
        ApprovalStatus::Approved => {
            if request.token_issued_at.is_some() {
                return Err(invalid_grant());
            }
            let tokens = issue_tokens(state, &request, &oidc_state, audience, None, None).await?;
            tokens.ok_or_else(invalid_grant)
        }
    }
}

/// The left half of the hash of an access token that matches the ID token's `alg`
/// (OpenID Connect Core §3.1.3.6; SHA-512 for Ed25519).
fn at_hash(access_token: &str, alg: &str) -> String {
    let digest: Vec<u8> = match alg {
        "EdDSA" => Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// Signs the access token (for `audience`) and the ID token of an approved request. The
/// access token is issued once: `None` when it already was. A push retry passes the `jti`
/// issued by its first attempt (`reissue_jti`) to send the same grant again rather than a
/// second one.
pub async fn issue_tokens(
    state: &AppState,
    request: &ApprovalRequest,
    oidc_state: &OidcRequestState,
    audience: String,
    push_auth_req_id: Option<&str>,
    reissue_jti: Option<String>,
) -> Result<Option<Value>> {
    let now = state.clock.now();
    let lifetime = Duration::seconds(state.settings.tokens.lifetime_secs);
    let mut grant = GrantClaims::for_approval(&state.issuer, request, audience, now, lifetime);
    let reissue = reissue_jti.is_some();
    if let Some(jti) = reissue_jti {
        grant.jti = jti;
    }
    let details = oidc::authorization_details(request);
    let claims = grant::oidc_access_claims(&grant, &details)?;
    let signer = state.signer.current();
    let access_token = signer.sign(&claims)?;
    let actor = Actor::new(ActorKind::Agent, &oidc_state.client_id);
    if !reissue
        && !state
            .store
            .mark_token_issued(&request.tenant_id, &request.id, &grant.jti, actor, now)
            .await?
    {
        return Ok(None);
    }
    metrics::counter!("countersign_tokens_issued_total").increment(1);
    let id_token = IdTokenClaims {
        iss: state.issuer.to_string(),
        sub: request.user_id.clone().unwrap_or_default(),
        aud: oidc_state.client_id.clone(),
        exp: (now + Duration::seconds(state.settings.oidc.id_token_lifetime_secs)).timestamp(),
        iat: now.timestamp(),
        auth_time: request.decided_at.unwrap_or(now).timestamp(),
        acr: oidc_state.acr.clone(),
        amr: vec!["user".into()],
        at_hash: Some(at_hash(&access_token, signer.algorithm())),
        auth_req_id: push_auth_req_id.map(str::to_string),
    };
    let id_token = signer.sign_id_token(&id_token)?;
    let mut response = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime.num_seconds(),
        "id_token": id_token,
        "scope": oidc_state.scope,
    });
    if !details.is_empty() {
        response["authorization_details"] = Value::Array(details);
    }
    Ok(Some(response))
}
