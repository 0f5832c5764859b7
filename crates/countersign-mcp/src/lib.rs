//! An MCP proxy that puts the guard in front of every `tools/call`.
//!
//! The proxy relays an MCP client's session to an upstream MCP server unchanged (initialisation,
//! capabilities, tools/list, resources, prompts, completions, logging, notifications, progress,
//! cancellation, and the server's own requests such as sampling and elicitation), except
//! `tools/call`: each call is first checked by a [`Guard`]. Allowed calls are forwarded, blocked
//! calls come back as a tool error the upstream never sees, and calls that need a person are held
//! until the decision, then forwarded with exactly the arguments that were approved.
//!
//! Two places run it: `countersign mcp wrap` (a stdio server in front of a command or a remote
//! server, checking through the HTTP API) and the server's `/mcp/{id}` gateway (streamable HTTP,
//! checking in-process).
mod guard;
mod held;
mod http_guard;
mod proxy;
mod upstream;
mod wrap;

pub use guard::{Guard, GuardFailure, McpCall};
pub use http_guard::HttpGuard;
pub use proxy::{Proxy, SessionOrigin};
pub use upstream::{HttpUpstream, Upstream};
pub use wrap::{WrapOptions, wrap};

/// The protocol versions the proxy relays: those that open with `initialize`, which it forwards
/// to the upstream so both ends agree on one version.
pub fn relayed_protocol_versions() -> Vec<rmcp::model::ProtocolVersion> {
    rmcp::model::ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .filter(|v| v.has_initialize())
        .cloned()
        .collect()
}
