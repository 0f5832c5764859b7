//! Access-token signing. Keys live in the store, so tokens stay verifiable across restarts;
//! their public halves are published as a JWKS with RFC 7638 thumbprints as `kid`.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_core::audit::Actor;
use countersign_core::{Clock, Error, Result};
use countersign_store::{SigningKeyRecord, Store};
use jsonwebtoken::{Algorithm, Header};
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The active key, parsed once: parsing PKCS#8 derives the public key, which costs as much
/// as a signature.
struct ActiveKey {
    kid: String,
    pair: KeyPairOf,
}

enum KeyPairOf {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl KeyPairOf {
    fn parse(alg: &str, der: &[u8]) -> Result<KeyPairOf> {
        match alg {
            "ES256" => EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map(KeyPairOf::Es256)
                .map_err(|e| Error::internal_msg(format!("bad ES256 key: {e}"))),
            "EdDSA" => Ed25519KeyPair::from_pkcs8(der)
                .map(KeyPairOf::EdDsa)
                .map_err(|e| Error::internal_msg(format!("bad EdDSA key: {e}"))),
            other => Err(Error::internal_msg(format!(
                "unsupported signing algorithm {other}"
            ))),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            KeyPairOf::Es256(_) => Algorithm::ES256,
            KeyPairOf::EdDsa(_) => Algorithm::EdDSA,
        }
    }

    /// The public half as a JWK (without `kid`, `use` and `alg`).
    fn public_jwk(&self) -> Result<Value> {
        match self {
            KeyPairOf::Es256(pair) => {
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(Error::internal_msg("unexpected P-256 public key length"));
                }
                Ok(json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                }))
            }
            KeyPairOf::EdDsa(pair) => Ok(json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            })),
        }
    }
}

/// Signs tokens with the active key and publishes every key's public half.
pub struct Signer {
    active: ActiveKey,
    jwks: Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.active.kid)
            .finish()
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, base64url.
fn thumbprint(jwk: &Value) -> Result<String> {
    let canonical = countersign_core::canonical::canonical_json(jwk)?;
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn generate(alg: &str) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    match alg {
        "ES256" => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| Error::internal_msg(format!("key generation failed: {e}"))),
        // jsonwebtoken needs a PKCS#8 v1 Ed25519 key.
        "EdDSA" => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| Error::internal_msg(format!("key generation failed: {e}"))),
        other => Err(Error::invalid(format!(
            "tokens.algorithm must be ES256 or EdDSA, not {other:?}"
        ))),
    }
}

impl Signer {
    /// A fresh key record of the given algorithm, not yet stored.
    pub fn new_key(algorithm: &str, clock: &dyn Clock) -> Result<SigningKeyRecord> {
        let der = generate(algorithm)?;
        Ok(SigningKeyRecord {
            kid: thumbprint(&KeyPairOf::parse(algorithm, &der)?.public_jwk()?)?,
            alg: algorithm.to_string(),
            private_der: der,
            created_at: clock.now(),
            active: true,
        })
    }

    /// Signs with the active key and publishes every key.
    pub fn from_records(keys: &[SigningKeyRecord]) -> Result<Signer> {
        let mut published = Vec::new();
        let mut active = None;
        for key in keys {
            let pair = KeyPairOf::parse(&key.alg, &key.private_der)?;
            let mut jwk = pair.public_jwk()?;
            let kid = thumbprint(&jwk)?;
            if let Value::Object(map) = &mut jwk {
                map.insert("kid".into(), json!(kid));
                map.insert("use".into(), json!("sig"));
                map.insert("alg".into(), json!(key.alg));
            }
            // The active key first: clients that take the first key get the right one.
            if key.active {
                published.insert(0, jwk);
                active = Some(ActiveKey { kid, pair });
            } else {
                published.push(jwk);
            }
        }
        let active = active.ok_or_else(|| Error::internal_msg("no active signing key"))?;
        Ok(Signer {
            active,
            jwks: json!({ "keys": published }),
        })
    }

    /// Signs an access token (`typ: at+jwt`, RFC 9068).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        self.sign_jwt("at+jwt", claims)
    }

    /// Signs an ID token (`typ: JWT`, OpenID Connect Core).
    pub fn sign_id_token<T: Serialize>(&self, claims: &T) -> Result<String> {
        self.sign_jwt("JWT", claims)
    }

    /// A JWS in compact form (RFC 7515): the header and claims as base64url JSON, signed with
    /// the active key (ES256 as the fixed-width `r || s` that JWS wants).
    fn sign_jwt<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        let mut header = Header::new(self.active.pair.algorithm());
        header.kid = Some(self.active.kid.clone());
        header.typ = Some(typ.into());
        let part = |json: Vec<u8>| URL_SAFE_NO_PAD.encode(json);
        let message = format!(
            "{}.{}",
            part(serde_json::to_vec(&header).map_err(Error::internal)?),
            part(serde_json::to_vec(claims).map_err(Error::internal)?)
        );
        let signature = match &self.active.pair {
            KeyPairOf::Es256(pair) => pair
                .sign(&SystemRandom::new(), message.as_bytes())
                .map_err(|_| Error::internal_msg("signing failed"))?
                .as_ref()
                .to_vec(),
            KeyPairOf::EdDsa(pair) => pair.sign(message.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{message}.{}", part(signature)))
    }

    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    pub fn algorithm(&self) -> &'static str {
        match self.active.pair {
            KeyPairOf::Es256(_) => "ES256",
            KeyPairOf::EdDsa(_) => "EdDSA",
        }
    }
}

/// The current signer, replaced as a whole when keys change (here or on another replica).
#[derive(Debug)]
pub struct Signers {
    current: RwLock<Arc<Signer>>,
}

impl Signers {
    /// Loads the store's keys, creating the first one with `algorithm` if there is none.
    pub async fn load_or_create(
        store: &Store,
        algorithm: &str,
        clock: &dyn Clock,
    ) -> Result<Signers> {
        let keys = store
            .ensure_signing_key(Signer::new_key(algorithm, clock)?)
            .await?;
        Ok(Signers {
            current: RwLock::new(Arc::new(Signer::from_records(&keys)?)),
        })
    }

    pub fn current(&self) -> Arc<Signer> {
        self.current.read().clone()
    }

    /// Re-reads the keys from the store.
    pub async fn reload(&self, store: &Store) -> Result<()> {
        let signer = Signer::from_records(&store.signing_keys().await?)?;
        *self.current.write() = Arc::new(signer);
        Ok(())
    }

    /// Makes a new key active; the old ones stay published so issued tokens still verify.
    pub async fn rotate(
        &self,
        store: &Store,
        algorithm: &str,
        clock: &dyn Clock,
        actor: Actor,
        tenant_id: &str,
    ) -> Result<SigningKeyRecord> {
        let key = Signer::new_key(algorithm, clock)?;
        store
            .rotate_signing_key(key.clone(), actor, tenant_id)
            .await?;
        self.reload(store).await?;
        Ok(key)
    }
}
