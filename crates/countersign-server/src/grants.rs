//! Grant introspection (RFC 7662) and revocation (RFC 7009), HTTP-free: a grant is active for
//! a verifier only when we signed it, it is unexpired, of the verifier's tenant and audience,
//! and neither consumed nor revoked.
use chrono::{DateTime, Utc};
use countersign_core::grant::{EndedGrant, GrantEnd, GrantIdentity};
use countersign_core::{Principal, Result};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::oidc::jwt::verify_signature;
use crate::state::AppState;

/// The longest token we look at; ours are far shorter.
const MAX_TOKEN_CHARS: usize = 16_384;

/// A grant whose signature verified against our keys, with all of its claims.
struct Verified {
    identity: GrantIdentity,
    claims: Map<String, Value>,
}

/// Our access tokens are `at+jwt` signed with one of our keys; anything else (ID tokens,
/// foreign or tampered tokens) is not a grant.
fn verify(state: &AppState, token: &str) -> Option<Verified> {
    if token.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some("at+jwt")
        || !matches!(header.alg, Algorithm::ES256 | Algorithm::EdDSA)
    {
        return None;
    }
    let signer = state.signer.current();
    let claims = verify_signature(token, signer.jwks(), header.alg, header.kid.as_deref()).ok()?;
    let identity = serde_json::from_value(Value::Object(claims.clone())).ok()?;
    Some(Verified { identity, claims })
}

fn expires_at(identity: &GrantIdentity) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(identity.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `POST /oauth/introspect`: `{"active":true, ...claims}` only for a grant active for the
/// caller; with `consume`, the answer spends it (of concurrent consumers exactly one sees it
/// active). Everything else is exactly `{"active":false}`.
pub async fn introspect(
    state: &AppState,
    caller: &Principal,
    token: &str,
    consume: bool,
) -> Result<Map<String, Value>> {
    let verifier = caller.grant_verifier()?;
    let inactive = || Map::from_iter([("active".to_string(), Value::Bool(false))]);
    let now = state.clock.now();
    let Some(grant) = verify(state, token) else {
        return Ok(inactive());
    };
    let id = &grant.identity;
    if !id.active_for(&state.issuer, &caller.tenant_id, verifier, now) {
        return Ok(inactive());
    }
    let active = if consume {
        state
            .store
            .end_grant(ended(id, GrantEnd::Consumed, now), caller.actor())
            .await?
    } else {
        !state.store.grant_ended(&id.jti).await?
    };
    if !active {
        return Ok(inactive());
    }
    let mut answer = Map::new();
    answer.insert("active".into(), Value::Bool(true));
    answer.insert("token_type".into(), Value::String("Bearer".into()));
    answer.extend(grant.claims);
    Ok(answer)
}

fn ended(id: &GrantIdentity, end: GrantEnd, at: DateTime<Utc>) -> EndedGrant {
    EndedGrant {
        tenant_id: id.tid.clone(),
        jti: id.jti.clone(),
        approval_id: id.approval_id.clone(),
        audience: id.first_audience(),
        end,
        at,
        expires_at: expires_at(id),
    }
}

/// `POST /oauth/revoke`: the grant's agent, an executor of its audience or an admin of its
/// tenant ends it. Tokens that are not our grants, other tenants' and expired ones are
/// answered like revoked ones (RFC 7009 §2.2): there is nothing to do.
pub async fn revoke(state: &AppState, caller: &Principal, token: &str) -> Result<()> {
    let now = state.clock.now();
    let Some(grant) = verify(state, token) else {
        return Ok(());
    };
    let id = &grant.identity;
    if id.iss != *state.issuer || id.tid != caller.tenant_id || now.timestamp() >= id.exp {
        return Ok(());
    }
    caller.may_revoke(&id.client_id, id.aud.values())?;
    state
        .store
        .end_grant(ended(id, GrantEnd::Revoked, now), caller.actor())
        .await?;
    Ok(())
}
