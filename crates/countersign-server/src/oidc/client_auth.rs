//! Client authentication at the OpenID endpoints: `client_secret_basic`,
//! `client_secret_post` and `private_key_jwt` (RFC 7523), exactly one per request.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use countersign_core::oidc::{AuthMethod, JWT_BEARER_ASSERTION, OidcClient};
use countersign_core::{Error, Result, secret};
use countersign_proto::ErrorCode;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::form::FormParams;
use super::jwt::{ClientJwtRules, verify_client_jwt};
use crate::state::AppState;

/// The form parameters that belong to client authentication, not to the request itself.
pub const AUTH_PARAMS: &[&str] = &[
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

fn invalid_client(message: impl Into<String>) -> Error {
    Error::coded(ErrorCode::InvalidClient, message)
}

enum Presented {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    Jwt {
        client_id: Option<String>,
        assertion: String,
    },
}

pub(super) fn decode_basic(value: &str) -> Result<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| invalid_client("the Authorization header must use the Basic scheme"))?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let unescape = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| invalid_client("malformed Basic credentials"))
    };
    Ok((unescape(id)?, unescape(secret)?))
}

fn presented(form: &FormParams, authorization: Option<&str>) -> Result<Presented> {
    let form_secret = form.owned("client_secret")?;
    let assertion = form.owned("client_assertion")?;
    let form_id = form.owned("client_id")?;
    let methods = [
        authorization.is_some(),
        form_secret.is_some(),
        assertion.is_some(),
    ]
    .into_iter()
    .filter(|m| *m)
    .count();
    if methods > 1 {
        return Err(Error::invalid(
            "use exactly one client authentication method per request",
        ));
    }
    if let Some(header) = authorization {
        let (client_id, secret) = decode_basic(header)?;
        if form_id.as_deref().is_some_and(|id| id != client_id) {
            return Err(invalid_client(
                "`client_id` differs from the Basic credentials",
            ));
        }
        return Ok(Presented::Basic { client_id, secret });
    }
    if let Some(secret) = form_secret {
        let client_id =
            form_id.ok_or_else(|| invalid_client("`client_secret` needs `client_id`"))?;
        return Ok(Presented::Post { client_id, secret });
    }
    if let Some(assertion) = assertion {
        if form.get("client_assertion_type")? != Some(JWT_BEARER_ASSERTION) {
            return Err(invalid_client(format!(
                "`client_assertion_type` must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok(Presented::Jwt {
            client_id: form_id,
            assertion,
        });
    }
    Err(invalid_client(
        "the client did not authenticate (client_secret_basic, client_secret_post or private_key_jwt)",
    ))
}

/// The `iss` of an assertion, read before it is verified, to know whose keys verify it.
pub(super) fn unverified_issuer(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// The one audience a client-signed JWT may name: the issuer. Endpoint URLs are refused, so
/// that an assertion a client made for another server that advertises our endpoints cannot be
/// replayed here (RFC 7523bis).
pub fn audiences(state: &AppState) -> Vec<String> {
    vec![state.issuer.to_string()]
}

/// Authenticates the calling client. Every failure is `invalid_client` (401) without saying
/// which part was wrong, except malformed requests (`invalid_request`).
pub async fn authenticate(
    state: &AppState,
    form: &FormParams,
    authorization: Option<&str>,
) -> Result<OidcClient> {
    let presented = presented(form, authorization)?;
    let (client_id, method) = match &presented {
        Presented::Basic { client_id, .. } => (client_id.clone(), AuthMethod::ClientSecretBasic),
        Presented::Post { client_id, .. } => (client_id.clone(), AuthMethod::ClientSecretPost),
        Presented::Jwt {
            client_id,
            assertion,
        } => {
            let id = match client_id {
                Some(id) => id.clone(),
                None => unverified_issuer(assertion)
                    .ok_or_else(|| invalid_client("the client assertion is not a JWT"))?,
            };
            (id, AuthMethod::PrivateKeyJwt)
        }
    };
    let unknown = || invalid_client("unknown client or bad credentials");
    if client_id.len() > 100 {
        return Err(unknown());
    }
    let client = state
        .store
        .find_active_oidc_client(&client_id)
        .await?
        .ok_or_else(unknown)?;
    if client.auth_method != method {
        return Err(invalid_client(format!(
            "this client authenticates with {}",
            client.auth_method.as_str()
        )));
    }
    match presented {
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            let expected = client.secret_hash.as_deref().ok_or_else(unknown)?;
            if !constant_time_eq(secret::hash_secret(&secret).as_bytes(), expected.as_bytes()) {
                return Err(unknown());
            }
        }
        Presented::Jwt { assertion, .. } => {
            let audiences = audiences(state);
            verify_client_jwt(
                state,
                &client,
                &assertion,
                ClientJwtRules {
                    audiences: &audiences,
                    subject_is_client: true,
                    require_iat_nbf: false,
                    registered_alg: None,
                    code: ErrorCode::InvalidClient,
                    what: "client assertion",
                },
            )
            .await?;
        }
    }
    Ok(client)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
