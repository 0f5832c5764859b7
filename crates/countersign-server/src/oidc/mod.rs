//! OpenID Connect Client-Initiated Backchannel Authentication (CIBA Core 1.0) with RFC 9396
//! authorization details: discovery, the backchannel authentication endpoint, the token
//! endpoint, and ping/push callbacks through the durable outbox.
pub mod client_auth;
pub mod delivery;
pub mod form;
pub mod jwt;
pub mod service;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_core::{Clock, Error, Result};
use countersign_proto::ErrorCode;
use countersign_store::Store;
use serde_json::Value;

use crate::settings::Settings;

/// Paths of the OpenID endpoints, below the issuer.
pub const BC_AUTHORIZE_PATH: &str = "/oidc/bc-authorize";
pub const TOKEN_PATH: &str = "/oidc/token";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The `acr` a decision through Countersign satisfies: a person approved this very request.
pub const ACR_HUMAN_APPROVAL: &str = "urn:countersign:acr:human-approval";
const SECRET_NAME: &str = "oidc.auth_req_id_key";

/// What the OpenID endpoints and the delivery worker share.
pub struct Oidc {
    auth_req_key: hmac::Key,
    detail_types: BTreeMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("authorization_details_types", &self.detail_types.keys())
            .finish()
    }
}

impl Oidc {
    pub async fn new(
        settings: &Settings,
        store: &Store,
        clock: &dyn Clock,
    ) -> anyhow::Result<Oidc> {
        let key = match &settings.oidc.secret {
            Some(given) => {
                anyhow::ensure!(
                    given.len() >= 32,
                    "oidc.secret must be at least 32 characters"
                );
                given.as_bytes().to_vec()
            }
            None => {
                let mut candidate = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut candidate)
                    .map_err(|_| anyhow::anyhow!("no randomness for the OpenID key"))?;
                store
                    .server_secret(SECRET_NAME, candidate, clock.now())
                    .await?
            }
        };
        let mut detail_types = BTreeMap::new();
        for (name, schema) in &settings.oidc.authorization_details_types {
            let validator = jsonschema::validator_for(schema).map_err(|e| {
                anyhow::anyhow!(
                    "oidc.authorization_details_types.{name} is not a valid JSON Schema: {e}"
                )
            })?;
            detail_types.insert(name.clone(), validator);
        }
        Ok(Oidc {
            auth_req_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            detail_types,
        })
    }

    /// The `auth_req_id` of an approval: HMAC-SHA256 of its id (256 bits, base64url). It can
    /// be recomputed for a ping, so it is never stored; only its SHA-256 is.
    pub fn auth_req_id(&self, approval_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.auth_req_key, approval_id.as_bytes()).as_ref())
    }

    pub fn detail_types(&self) -> Vec<String> {
        self.detail_types.keys().cloned().collect()
    }

    /// Checks RFC 9396 `authorization_details`: a non-empty array of objects whose `type` is
    /// configured and which match that type's schema.
    pub fn check_authorization_details(&self, value: &Value) -> Result<Vec<Value>> {
        let invalid = |m: String| Error::coded(ErrorCode::InvalidAuthorizationDetails, m);
        let Value::Array(items) = value else {
            return Err(invalid(
                "`authorization_details` must be a JSON array".into(),
            ));
        };
        if items.is_empty() {
            return Err(invalid("`authorization_details` must not be empty".into()));
        }
        for (i, item) in items.iter().enumerate() {
            let Some(kind) = item.get("type").and_then(Value::as_str) else {
                return Err(invalid(format!(
                    "`authorization_details[{i}]` must be an object with a string `type`"
                )));
            };
            let Some(validator) = self.detail_types.get(kind) else {
                return Err(invalid(format!(
                    "`authorization_details[{i}].type` {kind:?} is not supported; supported: {}",
                    self.detail_types().join(", ")
                )));
            };
            if let Some(error) = validator.iter_errors(item).next() {
                return Err(invalid(format!(
                    "`authorization_details[{i}]` does not match the schema of {kind:?}: {error} (at {})",
                    error.instance_path()
                )));
            }
        }
        Ok(items.clone())
    }
}
