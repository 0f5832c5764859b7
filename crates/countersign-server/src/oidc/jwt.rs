//! Checks of JWTs that clients sign (client assertions, signed authentication requests) and
//! of ID tokens we issued (`id_token_hint`). Times are checked against the server's clock.
use std::str::FromStr;

use chrono::{DateTime, Utc};
use countersign_core::oidc::{ASYMMETRIC_ALGS, OidcClient};
use countersign_core::{Error, Result};
use countersign_proto::ErrorCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::state::AppState;

/// What a client-signed JWT must satisfy.
pub struct ClientJwtRules<'a> {
    /// Accepted `aud` values (the issuer).
    pub audiences: &'a [String],
    /// `sub` must equal the client id (client assertions).
    pub subject_is_client: bool,
    /// `iat`, `nbf` and `jti` are required (signed requests); assertions need `jti` only.
    pub require_iat_nbf: bool,
    /// The one algorithm the client registered, if it did.
    pub registered_alg: Option<&'a str>,
    /// The error code to report failures with.
    pub code: ErrorCode,
    /// What the JWT is, for messages.
    pub what: &'a str,
}

pub(super) fn header_alg(token: &str) -> std::result::Result<(Algorithm, Option<String>), String> {
    // Read `alg` ourselves first, so that `none` and unknown algorithms get a clear answer.
    let header = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h).ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .ok_or("is not a JWT")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or("has no `alg`")?;
    if !ASYMMETRIC_ALGS.contains(&alg) {
        return Err(format!(
            "is signed with `{alg}`; only asymmetric algorithms are accepted ({})",
            ASYMMETRIC_ALGS.join(", ")
        ));
    }
    let alg = Algorithm::from_str(alg).map_err(|_| format!("uses an unsupported `alg` {alg}"))?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((alg, kid))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "another algorithm",
    }
}

/// Verifies the signature against a set of JWKs (by `kid`, or every key when there is none)
/// and returns the claims, without checking times or audience.
pub(crate) fn verify_signature(
    token: &str,
    jwks: &Value,
    alg: Algorithm,
    kid: Option<&str>,
) -> std::result::Result<Map<String, Value>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut tried = false;
    for key in keys {
        if let (Some(kid), Some(key_kid)) = (kid, key.get("kid").and_then(Value::as_str))
            && kid != key_kid
        {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(key) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        tried = true;
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation)
        {
            return Ok(data.claims);
        }
    }
    Err(if tried {
        "has a signature that no registered key verifies".into()
    } else {
        "names no registered key".into()
    })
}

fn number(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_i64)
}

/// Verifies a JWT the client signed: algorithm, key, `iss`, `sub`, `aud`, times, lifetime
/// and `jti` (which is remembered, so that the JWT cannot be replayed).
pub async fn verify_client_jwt(
    state: &AppState,
    client: &OidcClient,
    token: &str,
    rules: ClientJwtRules<'_>,
) -> Result<Map<String, Value>> {
    let fail = |m: String| Error::coded(rules.code, format!("the {} {m}", rules.what));
    let (alg, kid) = header_alg(token).map_err(fail)?;
    if let Some(registered) = rules.registered_alg
        && registered != alg_name(alg)
    {
        return Err(fail(format!(
            "is signed with {}; this client registered {registered}",
            alg_name(alg)
        )));
    }
    let jwks = client
        .jwks
        .as_ref()
        .ok_or_else(|| fail("cannot be checked: the client has no registered keys".into()))?;
    let claims = verify_signature(token, jwks, alg, kid.as_deref()).map_err(fail)?;
    let now = state.clock.now().timestamp();
    let leeway = state.settings.oidc.jwt_leeway_secs as i64;
    let max_lifetime = state.settings.oidc.max_jwt_lifetime_secs;
    let string = |name: &str| claims.get(name).and_then(Value::as_str);
    if string("iss") != Some(client.client_id.as_str()) {
        return Err(fail("must have `iss` equal to the client id".into()));
    }
    if rules.subject_is_client && string("sub") != Some(client.client_id.as_str()) {
        return Err(fail("must have `sub` equal to the client id".into()));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => rules.audiences.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| rules.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(fail(format!(
            "must have `aud` naming this server ({})",
            rules
                .audiences
                .first()
                .map(String::as_str)
                .unwrap_or_default()
        )));
    }
    let exp = number(&claims, "exp").ok_or_else(|| fail("must have a numeric `exp`".into()))?;
    if exp + leeway <= now {
        return Err(fail("has expired".into()));
    }
    let iat = number(&claims, "iat");
    let nbf = number(&claims, "nbf");
    if rules.require_iat_nbf && (iat.is_none() || nbf.is_none()) {
        return Err(fail("must have numeric `iat` and `nbf`".into()));
    }
    if let Some(nbf) = nbf {
        if nbf > now + leeway {
            return Err(fail("is not valid yet (`nbf`)".into()));
        }
        if nbf < now - max_lifetime {
            return Err(fail(format!(
                "has an `nbf` more than {max_lifetime} seconds in the past"
            )));
        }
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(fail("was issued in the future (`iat`)".into()));
    }
    let start = nbf.or(iat).unwrap_or(now);
    if exp - start > max_lifetime || exp - now > max_lifetime {
        return Err(fail(format!(
            "lives longer than {max_lifetime} seconds (`exp`)"
        )));
    }
    let jti = string("jti")
        .filter(|j| !j.is_empty() && j.len() <= 512)
        .ok_or_else(|| fail("must have a `jti`".into()))?;
    let expires =
        DateTime::<Utc>::from_timestamp(exp + leeway, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if !state
        .store
        .use_jti(&client.client_id, jti, expires, state.clock.now())
        .await?
    {
        return Err(fail("was used before (`jti` replay)".into()));
    }
    Ok(claims)
}

/// Verifies an ID token this server issued (signature and `iss`; an expired one still names
/// its user, as OpenID Connect allows for `id_token_hint`). Returns its `sub` and `aud`.
pub fn verify_own_id_token(state: &AppState, token: &str) -> Result<(String, Vec<String>)> {
    let fail = || Error::invalid("`id_token_hint` is not an ID token issued by this server");
    let header = jsonwebtoken::decode_header(token).map_err(|_| fail())?;
    let signer = state.signer.current();
    let claims = verify_signature(token, signer.jwks(), header.alg, header.kid.as_deref())
        .map_err(|_| fail())?;
    if claims.get("iss").and_then(Value::as_str) != Some(&*state.issuer) {
        return Err(fail());
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(fail)?
        .to_string();
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok((sub, aud))
}
