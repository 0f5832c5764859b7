//! `countersign mcp …`: the guard in front of MCP servers.
use std::ffi::OsString;

use anyhow::bail;
use clap::{Args, Subcommand};
use countersign_mcp::{HttpUpstream, Upstream, WrapOptions};

#[derive(Subcommand)]
pub enum McpCommand {
    /// Serve MCP on stdin/stdout in front of another MCP server, checking every tools/call
    /// with the guard first (agent key).
    ///
    /// Example: countersign mcp wrap --url https://cs.example --key csk_… -- npx -y
    /// @modelcontextprotocol/server-filesystem /data
    Wrap(WrapArgs),
}

#[derive(Args)]
pub struct WrapArgs {
    /// The Countersign server's base URL.
    #[arg(long, env = "COUNTERSIGN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An agent API key.
    #[arg(long, env = "COUNTERSIGN_KEY", hide_env_values = true)]
    key: String,
    /// The guard's proxy id (the tenant id).
    #[arg(long, default_value = "default")]
    proxy_id: String,
    /// The guard session every call belongs to (default: a fresh one per run).
    #[arg(long)]
    session_id: Option<String>,
    /// The name reviewers see for the upstream (default: the command's file name or the
    /// URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// A streamable-HTTP upstream instead of a command.
    #[arg(long, conflicts_with = "command")]
    upstream_url: Option<String>,
    /// A header sent to the streamable-HTTP upstream, `Name: value` (repeatable).
    #[arg(long = "header", requires = "upstream_url")]
    headers: Vec<String>,
    /// The upstream MCP server's command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<OsString>,
}

pub async fn run(command: McpCommand) -> anyhow::Result<()> {
    match command {
        McpCommand::Wrap(args) => wrap(args).await,
    }
}

async fn wrap(args: WrapArgs) -> anyhow::Result<()> {
    // stdout carries the MCP session: logs go to stderr, quiet unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Agent hosts write this stderr to log files: colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let upstream = match (args.upstream_url, args.command.split_first()) {
        (Some(url), None) => Upstream::Http(HttpUpstream {
            url,
            headers: parse_headers(&args.headers)?,
            client: reqwest013::Client::builder().build()?,
        }),
        (None, Some((program, rest))) => Upstream::Command {
            program: program.clone(),
            args: rest.to_vec(),
        },
        (Some(_), Some(_)) => bail!("give either --upstream-url or a command after --, not both"),
        (None, None) => {
            bail!("give the upstream MCP server: a command after --, or --upstream-url")
        }
    };
    countersign_mcp::wrap(WrapOptions {
        url: args.url,
        key: args.key,
        proxy_id: args.proxy_id,
        session_id: args.session_id,
        server_name: args.server_name,
        upstream,
    })
    .await
    .map_err(anyhow::Error::msg)
}

fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), value.trim().to_string()))
            }
            _ => bail!("--header {header:?} is not `Name: value`"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        let parsed = parse_headers(&["Authorization: Bearer a:b".into()]).unwrap_or_default();
        assert_eq!(
            parsed,
            vec![("Authorization".to_string(), "Bearer a:b".to_string())]
        );
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&[": empty name".into()]).is_err());
    }
}
