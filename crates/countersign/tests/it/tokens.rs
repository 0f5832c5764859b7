//! Access tokens verify with the JWKS and a standard JWT library, and carry what was approved.
use countersign_core::canonical::canonical_sha256;
use countersign_proto::ciba::{ApproveRequest, TokenResponse};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

use crate::support::*;

async fn approved_token(app: &TestApp) -> (String, String, String) {
    let (user, reviewer) = app.reviewer("alice@example.com").await;
    let (agent_id, agent) = app.agent("bot").await;
    let asked = agent.ciba_authorize(&payment(&user)).await.unwrap();
    reviewer
        .ciba_approve(&ApproveRequest {
            auth_req_id: Some(asked.auth_req_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    match agent.ciba_token(&asked.auth_req_id, None).await.unwrap() {
        TokenResponse::Approved {
            access_token: Some(token),
            ..
        } => (token, user, agent_id),
        other => panic!("expected a token, got {other:?}"),
    }
}

async fn verify(app: &TestApp, token: &str) -> serde_json::Value {
    let jwks: JwkSet = serde_json::from_value(app.admin.jwks().await.unwrap()).unwrap();
    let header = decode_header(token).unwrap();
    let kid = header.kid.clone().unwrap();
    let jwk = jwks.find(&kid).expect("the token's kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[app.base.as_str()]);
    validation.validate_aud = false;
    decode::<serde_json::Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn es256_tokens_verify_and_carry_the_approved_action() {
    let app = spawn_app().await;
    let (token, user, agent_id) = approved_token(&app).await;
    let claims = verify(&app, &token).await;
    assert_eq!(claims["iss"], app.base.as_str());
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(claims["client_id"], agent_id.as_str());
    assert_eq!(claims["scope"], "approve:payment");
    assert!(claims["jti"].as_str().unwrap().len() > 20);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 300);
    assert!(claims["approval_id"].as_str().unwrap().starts_with("apr_"));
    let detail = &claims["authorization_details"][0];
    assert_eq!(detail["type"], "countersign_approval");
    assert_eq!(detail["scope"], "approve:payment");
    assert_eq!(
        detail["binding_message"],
        "Approve payment of $500 to Acme Corp?"
    );
    let context = serde_json::json!({"amount": 500, "recipient": "Acme Corp", "currency": "USD"});
    assert_eq!(detail["context"], context);
    assert_eq!(
        detail["context_sha256"],
        canonical_sha256(&context).unwrap().as_str()
    );
    assert_eq!(
        decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
}

#[tokio::test]
async fn eddsa_tokens_verify_and_lifetime_is_configurable() {
    let app = spawn_with(|s| {
        s.tokens.algorithm = "EdDSA".into();
        s.tokens.lifetime_secs = 60;
    })
    .await;
    let (token, _, _) = approved_token(&app).await;
    assert_eq!(
        decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    let claims = verify(&app, &token).await;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
}

#[tokio::test]
async fn a_tampered_token_does_not_verify() {
    let app = spawn_app().await;
    let (token, _, _) = approved_token(&app).await;
    let jwks: JwkSet = serde_json::from_value(app.admin.jwks().await.unwrap()).unwrap();
    let header = decode_header(&token).unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value =
        serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    payload["authorization_details"][0]["context"]["amount"] = serde_json::json!(50000);
    parts[1] = engine.encode(serde_json::to_vec(&payload).unwrap());
    let forged = parts.join(".");
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    assert!(decode::<serde_json::Value>(&forged, &key, &validation).is_err());
}
