//! `application/x-www-form-urlencoded` bodies of the OAuth endpoints.
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use countersign_core::{Error, Result};
use countersign_proto::ErrorCode;

/// The parameters of a form body; OAuth forbids sending one more than once.
#[derive(Debug, Clone, Default)]
pub struct FormParams {
    pairs: Vec<(String, String)>,
}

impl FormParams {
    /// The parameters of a body that must be `application/x-www-form-urlencoded`.
    pub fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<FormParams> {
        let is_form = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(Error::coded(
                ErrorCode::UnsupportedMediaType,
                "the body must be `application/x-www-form-urlencoded`",
            ));
        }
        Ok(FormParams::parse(body))
    }

    pub fn parse(body: &[u8]) -> FormParams {
        FormParams {
            pairs: url::form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The value of `name`; empty values count as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Result<Option<&str>> {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::invalid(format!(
                "`{name}` must not be sent more than once"
            )));
        }
        Ok(first)
    }

    pub fn owned(&self, name: &str) -> Result<Option<String>> {
        Ok(self.get(name)?.map(str::to_string))
    }

    /// The parameters other than those listed, sorted, as one JSON text: equal for two
    /// bodies that differ only in order, in encoding or in the excluded parameters.
    pub fn canonical_except(&self, excluded: &[&str]) -> String {
        let mut pairs: Vec<&(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, v)| !v.is_empty() && !excluded.contains(&k.as_str()))
            .collect();
        pairs.sort();
        serde_json::to_string(&pairs).unwrap_or_default()
    }

    /// Names present other than those listed.
    pub fn names_except<'a>(&'a self, allowed: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, v)| !v.is_empty() && !allowed.contains(&k.as_str()))
            .map(|(k, _)| k.as_str())
    }
}
