//! MCP (Model Context Protocol): what the guard knows about calls that came through an MCP
//! gateway (the tool's annotations, the server and client), and the upstream MCP servers an
//! admin registers for the in-server gateway.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use countersign_proto::guard::{McpOrigin, ToolAnnotations};

use crate::{Error, Result, validate};

/// At most this many characters in an MCP server name or client description.
pub const MAX_ORIGIN_CHARS: usize = 200;
/// At most this many headers per registered server.
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_NAME_CHARS: usize = 100;
pub const MAX_HEADER_VALUE_CHARS: usize = 4096;
/// Headers the gateway sets itself (the transport and the MCP protocol own them), so a
/// registration may not.
pub const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// A tool's annotations with MCP's defaults filled in: what a policy condition sees as
/// `tool.annotations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveAnnotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl EffectiveAnnotations {
    /// MCP's defaults for hints a tool does not give: not read-only, destructive unless
    /// read-only, not idempotent, open world. A call that did not come through MCP (no
    /// annotations at all) gets the same defaults: nothing vouches for it.
    pub fn of(annotations: Option<&ToolAnnotations>) -> EffectiveAnnotations {
        let given = annotations.copied().unwrap_or_default();
        let read_only = given.read_only_hint.unwrap_or(false);
        EffectiveAnnotations {
            read_only,
            destructive: given.destructive_hint.unwrap_or(!read_only),
            idempotent: given.idempotent_hint.unwrap_or(false),
            open_world: given.open_world_hint.unwrap_or(true),
        }
    }

    /// As a condition sees it: the four hints under MCP's own (camelCase) names.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        })
    }
}

/// Checks the MCP origin of a tool call: the server and client names are single-line text
/// without hidden characters, like `scope`.
pub fn validate_origin(origin: &McpOrigin) -> Result<()> {
    validate::text("mcp.server", &origin.server, MAX_ORIGIN_CHARS)?;
    if let Some(client) = &origin.client {
        validate::text("mcp.client", client, MAX_ORIGIN_CHARS)?;
    }
    Ok(())
}

/// An upstream MCP server (streamable HTTP) registered for the in-server gateway
/// (`/mcp/{id}`). The header values are secrets (bearer tokens, API keys): they are sent to
/// the upstream and never shown, logged or audited.
#[derive(Clone, PartialEq, Eq)]
pub struct McpServerRecord {
    pub tenant_id: String,
    pub id: String,
    pub url: String,
    /// Sent with every request to the upstream, in this order.
    pub headers: Vec<(String, String)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for McpServerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerRecord")
            .field("tenant_id", &self.tenant_id)
            .field("id", &self.id)
            .field("url", &self.url)
            .field("header_names", &self.header_names())
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl McpServerRecord {
    /// The names of its headers, never their values.
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(name, _)| name.clone()).collect()
    }
}

/// A server id: a lowercase letter or digit, then up to 62 lowercase letters, digits, `_`
/// or `-` (it appears in the gateway's path, `/mcp/{id}`).
pub fn is_server_id(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && id.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_server_id(id: &str) -> Result<()> {
    if is_server_id(id) {
        Ok(())
    } else {
        Err(Error::invalid(
            "`id` must be 1 to 63 characters: a lowercase letter or digit, then lowercase letters, digits, `_` or `-`",
        ))
    }
}

/// An HTTP token (RFC 9110 §5.6.2) character.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks the headers a registration sends upstream and puts them in a stable order. Error
/// messages name the header, never its value.
pub fn check_headers(headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::invalid(format!(
            "`headers` may hold at most {MAX_HEADERS} headers; got {}",
            headers.len()
        )));
    }
    let mut checked = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_CHARS || !name.chars().all(is_tchar) {
            return Err(Error::invalid(format!(
                "`headers`: a header name must be 1 to {MAX_HEADER_NAME_CHARS} characters of an HTTP token (letters, digits and !#$%&'*+-.^_`|~); {:?} is not",
                name.chars().take(MAX_HEADER_NAME_CHARS).collect::<String>()
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(Error::invalid(format!(
                "`headers`: {name} is set by the gateway itself and may not be configured"
            )));
        }
        if value.len() > MAX_HEADER_VALUE_CHARS
            || !value.chars().all(|c| c == ' ' || c.is_ascii_graphic())
        {
            return Err(Error::invalid(format!(
                "`headers`: the value of {name} must be at most {MAX_HEADER_VALUE_CHARS} visible ASCII characters or spaces"
            )));
        }
        checked.push((name, value));
    }
    Ok(checked)
}

/// A new registration, checked (except whether the URL may be reached, which is the
/// operator's outbound rule and checked by the server).
pub fn new_server(
    tenant_id: &str,
    id: &str,
    url: &str,
    headers: BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<McpServerRecord> {
    check_server_id(id)?;
    crate::notify::validate_endpoint_url("url", url)?;
    Ok(McpServerRecord {
        tenant_id: tenant_id.to_string(),
        id: id.to_string(),
        url: url.to_string(),
        headers: check_headers(headers)?,
        created_at: now,
        updated_at: now,
    })
}

/// The registration with a new URL and headers (which replace the old ones entirely).
pub fn replace_server(
    existing: McpServerRecord,
    url: &str,
    headers: BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<McpServerRecord> {
    crate::notify::validate_endpoint_url("url", url)?;
    Ok(McpServerRecord {
        url: url.to_string(),
        headers: check_headers(headers)?,
        updated_at: now,
        ..existing
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_proto::ErrorCode;

    fn hints(
        read_only: Option<bool>,
        destructive: Option<bool>,
        idempotent: Option<bool>,
        open_world: Option<bool>,
    ) -> ToolAnnotations {
        ToolAnnotations {
            read_only_hint: read_only,
            destructive_hint: destructive,
            idempotent_hint: idempotent,
            open_world_hint: open_world,
        }
    }

    #[test]
    fn missing_hints_take_mcp_defaults() {
        let none = EffectiveAnnotations::of(None);
        assert_eq!(
            none,
            EffectiveAnnotations {
                read_only: false,
                destructive: true,
                idempotent: false,
                open_world: true
            }
        );
        assert_eq!(
            EffectiveAnnotations::of(Some(&ToolAnnotations::default())),
            none
        );
        // Read-only tools are not destructive unless they say so.
        let read_only = EffectiveAnnotations::of(Some(&hints(Some(true), None, None, None)));
        assert!(read_only.read_only && !read_only.destructive);
        let odd = EffectiveAnnotations::of(Some(&hints(Some(true), Some(true), None, None)));
        assert!(odd.destructive);
        let given = EffectiveAnnotations::of(Some(&hints(
            Some(false),
            Some(false),
            Some(true),
            Some(false),
        )));
        assert_eq!(
            given,
            EffectiveAnnotations {
                read_only: false,
                destructive: false,
                idempotent: true,
                open_world: false
            }
        );
        assert_eq!(
            given.to_json(),
            serde_json::json!({"readOnlyHint": false, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false})
        );
    }

    #[test]
    fn annotations_refuse_unknown_keys() {
        let parsed: ToolAnnotations = serde_json::from_str(r#"{"readOnlyHint": true}"#).unwrap();
        assert_eq!(parsed.read_only_hint, Some(true));
        assert!(serde_json::from_str::<ToolAnnotations>(r#"{"title": "x"}"#).is_err());
        assert!(serde_json::from_str::<ToolAnnotations>(r#"{"read_only_hint": true}"#).is_err());
    }

    #[test]
    fn origins_are_visible_text() {
        let origin = |server: &str, client: Option<&str>| McpOrigin {
            server: server.into(),
            client: client.map(str::to_string),
        };
        assert!(validate_origin(&origin("files", Some("claude-desktop 1.2.0"))).is_ok());
        assert!(validate_origin(&origin("files", None)).is_ok());
        assert_eq!(
            validate_origin(&origin("fi\u{202e}les", None))
                .unwrap_err()
                .code(),
            ErrorCode::InvalidText
        );
        assert_eq!(
            validate_origin(&origin("files", Some("a\u{200b}b")))
                .unwrap_err()
                .code(),
            ErrorCode::InvalidText
        );
        assert!(validate_origin(&origin(" ", None)).is_err());
        assert!(validate_origin(&origin(&"x".repeat(201), None)).is_err());
    }

    #[test]
    fn server_ids() {
        for good in ["files", "0", "a-b_c", &"a".repeat(63)] {
            assert!(is_server_id(good), "{good}");
        }
        for bad in ["", "Files", "-a", "_a", "a b", "a/b", "é", &"a".repeat(64)] {
            assert!(!is_server_id(bad), "{bad}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn headers_are_checked_without_echoing_values() {
        let ok = check_headers(headers(&[
            ("Authorization", "Bearer s3cret"),
            ("X-Api-Key", "k"),
        ]))
        .unwrap();
        assert_eq!(ok.len(), 2);
        for reserved in [
            "Host",
            "content-length",
            "Content-Type",
            "ACCEPT",
            "Connection",
            "Transfer-Encoding",
            "Mcp-Session-Id",
            "mcp-protocol-version",
            "Last-Event-ID",
        ] {
            assert!(
                check_headers(headers(&[(reserved, "x")])).is_err(),
                "{reserved}"
            );
        }
        assert!(check_headers(headers(&[("Bad Name", "x")])).is_err());
        assert!(check_headers(headers(&[("", "x")])).is_err());
        assert!(check_headers(headers(&[(&"x".repeat(101), "x")])).is_err());
        // HTTP allows a name twice (the values are combined).
        assert!(check_headers(headers(&[("X-A", "1"), ("x-a", "2")])).is_ok());
        let e = check_headers(headers(&[("X-Token", "s3cret\nInjected: yes")])).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(check_headers(headers(&[("X-Token", "é")])).is_err());
        assert!(check_headers(headers(&[("X-Token", &"a".repeat(4097))])).is_err());
        assert!(check_headers(headers(&[("X-Token", &"a".repeat(4096))])).is_ok());
        let many: BTreeMap<String, String> =
            (0..21).map(|i| (format!("X-{i}"), "v".into())).collect();
        assert!(check_headers(many).is_err());
    }

    #[test]
    fn debug_output_hides_header_values() {
        let record = new_server(
            "t",
            "files",
            "https://mcp.example.com/mcp",
            headers(&[("Authorization", "Bearer s3cret")]),
            Utc::now(),
        )
        .unwrap();
        let shown = format!("{record:?}");
        assert!(shown.contains("Authorization") && !shown.contains("s3cret"));
        assert!(new_server("t", "files", "ftp://x", BTreeMap::new(), Utc::now()).is_err());
        assert!(new_server("t", "Files", "https://x", BTreeMap::new(), Utc::now()).is_err());
    }
}
