//! The MCP server behind the proxy: a command speaking stdio, or a streamable-HTTP endpoint.
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

use reqwest013::header::{HeaderName, HeaderValue};
use rmcp::service::{RoleClient, RunningService, Service, ServiceExt};
use rmcp::transport::TokioChildProcess;

use crate::proxy::{InOrder, Link};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};

/// Where the proxy finds the real server.
#[derive(Clone)]
pub enum Upstream {
    /// A command started for each session, speaking MCP on its stdin and stdout; its stderr is
    /// passed through.
    Command {
        program: OsString,
        args: Vec<OsString>,
    },
    Http(HttpUpstream),
}

#[derive(Clone)]
pub struct HttpUpstream {
    pub url: String,
    /// Sent with every request (e.g. the upstream's own `Authorization`).
    pub headers: Vec<(String, String)>,
    pub client: reqwest013::Client,
}

impl Upstream {
    /// The name reviewers see when none is given: the command's file name or the URL's host.
    pub fn default_name(&self) -> String {
        match self {
            Upstream::Command { program, .. } => std::path::Path::new(program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.to_string_lossy().into_owned()),
            Upstream::Http(http) => url_host(&http.url).unwrap_or_else(|| http.url.clone()),
        }
    }

    /// Start (or reach) the upstream and run the MCP handshake with `service`'s client info.
    pub(crate) async fn connect<S: Service<RoleClient>>(
        &self,
        service: S,
        link: Arc<Link>,
    ) -> Result<RunningService<RoleClient, S>, String> {
        match self {
            Upstream::Command { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let inner = TokioChildProcess::new(command)
                    .map_err(|e| format!("could not start {}: {e}", program.to_string_lossy()))?;
                let transport = InOrder { inner, link };
                service
                    .serve(transport)
                    .await
                    .map_err(|e| format!("the upstream MCP server did not initialise: {e}"))
            }
            Upstream::Http(http) => {
                let mut headers = HashMap::new();
                for (name, value) in &http.headers {
                    let name = HeaderName::try_from(name.as_str())
                        .map_err(|_| format!("{name:?} is not a header name"))?;
                    let value = HeaderValue::try_from(value.as_str())
                        .map_err(|_| format!("the value of {name} is not a header value"))?;
                    headers.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(http.url.as_str())
                    .custom_headers(headers);
                let inner = StreamableHttpClientTransport::with_client(http.client.clone(), config);
                let transport = InOrder { inner, link };
                service
                    .serve(transport)
                    .await
                    .map_err(|e| format!("the upstream MCP server did not initialise: {e}"))
            }
        }
    }
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_the_command_file_or_the_url_host() {
        let command = Upstream::Command {
            program: "/usr/local/bin/mcp-server-files".into(),
            args: vec![],
        };
        assert_eq!(command.default_name(), "mcp-server-files");
        assert_eq!(
            url_host("https://user:pw@mcp.example.com:8443/mcp?x=1").as_deref(),
            Some("mcp.example.com:8443")
        );
        assert_eq!(url_host("not a url"), None);
    }
}
