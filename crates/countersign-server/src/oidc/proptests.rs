//! Property tests of the OpenID endpoints' parsers of untrusted input: form bodies, Basic
//! credentials and client-signed JWTs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::client_auth::{decode_basic, unverified_issuer};
use super::form::FormParams;
use super::jwt::{header_alg, verify_signature};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// JWT-shaped strings: three base64url parts whose first two are (often) JSON objects.
fn jwt_like() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("ES256".to_string()),
        Just("PS256".to_string()),
        Just("EdDSA".to_string()),
        Just("none".to_string()),
        Just("HS256".to_string()),
        any::<String>(),
    ];
    let header = (alg, proptest::option::of("[a-z0-9-]{0,8}")).prop_map(|(alg, kid)| {
        let mut h = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            h["kid"] = Value::String(kid);
        }
        h.to_string()
    });
    let claims = (any::<String>(), any::<i64>())
        .prop_map(|(iss, exp)| json!({"iss": iss, "sub": iss, "exp": exp}).to_string());
    prop_oneof![
        any::<String>(),
        (header, claims, prop::collection::vec(any::<u8>(), 0..80)).prop_map(
            |(h, c, sig)| format!("{}.{}.{}", b64(h.as_bytes()), b64(c.as_bytes()), b64(&sig))
        ),
        "[A-Za-z0-9_.=-]{0,120}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_form_body_parses_without_panicking(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let form = FormParams::parse(&body);
        let _ = form.get("scope");
        let _ = form.names_except(&["scope"]).count();
    }

    #[test]
    fn form_bodies_round_trip(pairs in prop::collection::vec(("[a-z_]{1,6}", any::<String>()), 0..8)) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let form = FormParams::parse(body.as_bytes());
        for (name, _) in &pairs {
            let sent: Vec<&String> = pairs
                .iter()
                .filter(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v)
                .collect();
            match form.get(name) {
                Ok(Some(value)) => prop_assert!(sent.len() == 1 && sent[0] == value),
                Ok(None) => prop_assert!(sent.is_empty()),
                // OAuth forbids a parameter twice.
                Err(_) => prop_assert!(sent.len() > 1),
            }
        }
    }

    #[test]
    fn basic_credentials_never_panic_and_round_trip(id in any::<String>(), secret in any::<String>(), junk in any::<String>()) {
        let _ = decode_basic(&junk);
        let _ = decode_basic(&format!("Basic {junk}"));
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let header = format!("Basic {}", STANDARD.encode(format!("{}:{}", encode(&id), encode(&secret))));
        prop_assert_eq!(decode_basic(&header).unwrap(), (id, secret));
    }

    #[test]
    fn jwt_parsing_never_panics(token in jwt_like()) {
        let _ = unverified_issuer(&token);
        if let Ok((alg, kid)) = header_alg(&token) {
            prop_assert!(matches!(alg, Algorithm::ES256 | Algorithm::PS256 | Algorithm::EdDSA));
            let jwks = json!({"keys": [
                {"kty": "EC", "crv": "P-256", "kid": kid.clone().unwrap_or_default(),
                 "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                 "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
                "not a key"
            ]});
            prop_assert!(verify_signature(&token, &jwks, alg, kid.as_deref()).is_err());
        }
    }
}
