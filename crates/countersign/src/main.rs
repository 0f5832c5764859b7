//! The `countersign` command: run the server, and administer a running one.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use countersign_client::{ApprovalFilter, Client};
use countersign_proto::TrustLevel;
use countersign_proto::admin::{
    CreateAgent, CreateApiKey, CreateInvitation, CreateSignInLink, CreateTenant, KeyRole,
    LoginLinkCreated,
};
use countersign_proto::oidc::CreateOidcClient;
use countersign_server::{App, Settings};
use serde::Serialize;

mod mcp;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Human-in-the-loop authorization server for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(ServerConfigArgs),
    /// Exit 0 when the server at --url is ready.
    Healthcheck(Remote),
    /// Manage users, agents, API keys and tenants of a running server.
    Admin {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// List and decide approval requests (reviewer or admin key).
    Approvals {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Read and verify the audit trail (admin key).
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Put the guard in front of MCP servers.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
}

#[derive(Args)]
struct ServerConfigArgs {
    /// A TOML configuration file.
    #[arg(long, env = "COUNTERSIGN_CONFIG")]
    config: Option<PathBuf>,
    /// Where the data lives (default ./countersign-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ServerConfigArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Create a demo agent and reviewer with fresh keys and print a curl walk-through.
    #[arg(long)]
    demo: bool,
}

#[derive(Args, Clone)]
struct Remote {
    /// The server's base URL.
    #[arg(
        long,
        env = "COUNTERSIGN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// The API key to act with.
    #[arg(long, env = "COUNTERSIGN_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
    #[command(subcommand)]
    Users(UsersCommand),
    #[command(subcommand)]
    Agents(AgentsCommand),
    #[command(subcommand, name = "api-keys")]
    ApiKeys(KeysCommand),
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Token-signing keys (admins of `default`).
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCommand),
    /// Invite a person to the dashboard (creating the user if needed); prints the one-time
    /// invitation link.
    Invite {
        email: String,
        /// The new user's name (default: the email's local part).
        #[arg(long)]
        name: Option<String>,
        /// Make the user an admin of the tenant.
        #[arg(long)]
        admin: bool,
    },
    /// Print a one-time dashboard sign-in link for an existing user.
    #[command(name = "sign-in-link")]
    SignInLink { email: String },
    /// Agents registered as OpenID Connect CIBA clients.
    #[command(subcommand, name = "oidc-clients")]
    OidcClients(OidcClientsCommand),
}

#[derive(Subcommand)]
enum OidcClientsCommand {
    /// Register an agent as an OpenID client (its client_id is the agent id). The client
    /// secret, for secret methods, is printed only here.
    Create {
        #[arg(long)]
        agent_id: String,
        /// client_secret_basic, client_secret_post or private_key_jwt.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// poll, ping or push.
        #[arg(long, default_value = "poll")]
        delivery_mode: String,
        /// The client's notification endpoint (ping and push).
        #[arg(long)]
        notification_endpoint: Option<String>,
        /// A file holding the client's public JWK Set (private_key_jwt, signed requests).
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// Require signed authentication requests with this algorithm.
        #[arg(long)]
        request_signing_alg: Option<String>,
        /// Require the user's user_code in every request.
        #[arg(long)]
        user_code: bool,
    },
    List,
    Get {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum SigningKeysCommand {
    /// Make a new key active; earlier keys stay published.
    Rotate {
        /// ES256 or EdDSA (default: the server's tokens.algorithm).
        #[arg(long)]
        algorithm: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    List,
    Get {
        id: String,
    },
    Disable {
        id: String,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    Create {
        #[arg(long)]
        name: String,
        /// development, standard, elevated, restricted or critical.
        #[arg(long, default_value = "standard")]
        trust_level: String,
    },
    List,
    Get {
        id: String,
    },
    Disable {
        id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    Create {
        /// admin, reviewer, agent or executor.
        #[arg(long)]
        role: String,
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        agent_id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// A grant audience an executor key verifies (repeat for several).
        #[arg(long = "audience")]
        audiences: Vec<String>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    List {
        /// pending, approved, rejected, expired, cancelled or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        limit: Option<u32>,
    },
    Get {
        id: String,
    },
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print events in chain order.
    List {
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Check the hash chain; exits 1 and names the first broken link if it is broken.
    Verify,
}

fn print<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A one-time link: the URL alone on stdout (for scripts), the explanation on stderr.
fn print_link(what: &str, created: &LoginLinkCreated) -> anyhow::Result<()> {
    eprintln!(
        "{what} for {} (works once, expires {}):",
        created.email,
        created.view.expires_at.to_rfc3339()
    );
    println!("{}", created.url);
    Ok(())
}

fn load_settings(args: &ServerConfigArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(args.config.as_deref()).context("invalid configuration")?;
    if let Some(dir) = &args.data_dir {
        settings.data_dir = dir.clone();
    }
    Ok(settings)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = load_settings(&args.config)?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    settings.demo |= args.demo;
    countersign_server::telemetry::init_logging(&settings.log);
    let app = countersign_server::build(settings).await?;
    announce(&app);
    app.run(shutdown_signal()).await
}

fn announce(app: &App) {
    let addr = app.local_addr();
    tracing::info!(%addr, issuer = app.issuer(), "countersign is listening");
    if let Some(metrics) = app.metrics_addr() {
        tracing::info!(addr = %metrics, "metrics are served on their own listener");
    }
    if let Some(bootstrap) = &app.bootstrap {
        match &bootstrap.admin_key {
            Some(key) => {
                println!(
                    "Created tenant `default`. Its admin API key is shown only this once:\n\n    {key}\n"
                )
            }
            None => println!(
                "Created tenant `default` with the admin key from COUNTERSIGN_BOOTSTRAP_ADMIN_KEY."
            ),
        }
    }
    if let Some(demo) = &app.demo {
        let base = format!("http://{addr}");
        println!(
            r#"Demo agent {agent} and reviewer {user} are ready.

Open the dashboard as {email} with this sign-in link (it works once and expires {expires}):

  {sign_in_url}

Then walk the flow from a shell; the request appears in the dashboard's queue as you go:

  export AGENT_KEY={agent_key}
  export REVIEWER_KEY={reviewer_key}

  # 1. The agent asks the reviewer
  curl -s -X POST {base}/ciba/authorize -H "Authorization: Bearer $AGENT_KEY" -H 'Content-Type: application/json' \
    -d '{{"userId":"{user}","scope":"approve:payment","bindingMessage":"Approve payment of $500 to Acme Corp?","requestedExpiry":300,"context":{{"amount":500,"recipient":"Acme Corp","currency":"USD"}}}}'
  export AUTH_REQ_ID=...   # the authReqId from the answer

  # 2. The agent polls (waitSeconds long-polls)
  curl -s "{base}/ciba/token?authReqId=$AUTH_REQ_ID" -H "Authorization: Bearer $AGENT_KEY"

  # 3. The reviewer approves it in the dashboard, or here (or POST /ciba/deny)
  curl -s "{base}/v1/approvals?status=pending" -H "Authorization: Bearer $REVIEWER_KEY"
  curl -s -X POST {base}/ciba/approve -H "Authorization: Bearer $REVIEWER_KEY" -H 'Content-Type: application/json' \
    -d "{{\"authReqId\":\"$AUTH_REQ_ID\"}}"

  # 4. The agent gets its access token, verifiable with {base}/.well-known/jwks.json
  curl -s "{base}/ciba/token?authReqId=$AUTH_REQ_ID" -H "Authorization: Bearer $AGENT_KEY"
"#,
            agent = demo.agent_id,
            user = demo.user_id,
            agent_key = demo.agent_key,
            reviewer_key = demo.reviewer_key,
            email = demo.reviewer_email,
            expires = demo.sign_in_expires_at.to_rfc3339(),
            sign_in_url = demo.sign_in_url,
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

fn client(remote: &Remote) -> anyhow::Result<Client> {
    Ok(Client::for_cli(&remote.url, remote.key.clone())?)
}

async fn admin(remote: Remote, command: AdminCommand) -> anyhow::Result<()> {
    let c = client(&remote)?;
    match command {
        AdminCommand::Users(cmd) => match cmd {
            UsersCommand::Create { email, name } => print(&c.create_user(&email, &name).await?),
            UsersCommand::List => print(&c.list_users().await?),
            UsersCommand::Get { id } => print(&c.get_user(&id).await?),
            UsersCommand::Disable { id } => print(&c.disable_user(&id).await?),
        },
        AdminCommand::Agents(cmd) => match cmd {
            AgentsCommand::Create { name, trust_level } => {
                let trust_level = TrustLevel::parse(&trust_level).with_context(|| {
                    format!("--trust-level must be development, standard, elevated, restricted or critical, not {trust_level:?}")
                })?;
                print(&c.create_agent(&CreateAgent { name, trust_level }).await?)
            }
            AgentsCommand::List => print(&c.list_agents().await?),
            AgentsCommand::Get { id } => print(&c.get_agent(&id).await?),
            AgentsCommand::Disable { id } => print(&c.disable_agent(&id).await?),
        },
        AdminCommand::ApiKeys(cmd) => match cmd {
            KeysCommand::Create {
                role,
                user_id,
                agent_id,
                name,
                audiences,
            } => {
                let role = KeyRole::parse(&role).with_context(|| {
                    format!("--role must be admin, reviewer, agent or executor, not {role:?}")
                })?;
                print(
                    &c.create_api_key(&CreateApiKey {
                        role,
                        user_id,
                        agent_id,
                        name,
                        audiences,
                    })
                    .await?,
                )
            }
            KeysCommand::List => print(&c.list_api_keys().await?),
            KeysCommand::Revoke { id } => print(&c.revoke_api_key(&id).await?),
        },
        AdminCommand::Tenants(TenantsCommand::Create { id, name }) => {
            print(&c.create_tenant(&CreateTenant { id, name }).await?)
        }
        AdminCommand::SigningKeys(SigningKeysCommand::Rotate { algorithm }) => {
            print(&c.rotate_signing_key(algorithm).await?)
        }
        AdminCommand::OidcClients(cmd) => match cmd {
            OidcClientsCommand::Create {
                agent_id,
                auth_method,
                delivery_mode,
                notification_endpoint,
                jwks_file,
                request_signing_alg,
                user_code,
            } => {
                let jwks = match jwks_file {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        Some(
                            serde_json::from_str(&text)
                                .with_context(|| format!("{} is not JSON", path.display()))?,
                        )
                    }
                    None => None,
                };
                print(
                    &c.create_oidc_client(&CreateOidcClient {
                        agent_id,
                        token_endpoint_auth_method: auth_method,
                        jwks,
                        backchannel_token_delivery_mode: delivery_mode,
                        backchannel_client_notification_endpoint: notification_endpoint,
                        backchannel_authentication_request_signing_alg: request_signing_alg,
                        backchannel_user_code_parameter: user_code,
                        grant_types: None,
                    })
                    .await?,
                )
            }
            OidcClientsCommand::List => print(&c.list_oidc_clients().await?),
            OidcClientsCommand::Get { id } => print(&c.get_oidc_client(&id).await?),
            OidcClientsCommand::Delete { id } => {
                c.delete_oidc_client(&id).await?;
                println!("deleted {id}");
                Ok(())
            }
        },
        AdminCommand::Invite { email, name, admin } => {
            let created = c
                .create_invitation(&CreateInvitation {
                    email,
                    name,
                    is_admin: admin,
                })
                .await?;
            print_link("Invitation", &created)
        }
        AdminCommand::SignInLink { email } => {
            let created = c
                .create_sign_in_link(&CreateSignInLink {
                    user_id: None,
                    email: Some(email),
                })
                .await?;
            print_link("Sign-in link", &created)
        }
    }
}

async fn approvals(remote: Remote, command: ApprovalsCommand) -> anyhow::Result<()> {
    let c = client(&remote)?;
    match command {
        ApprovalsCommand::List { status, limit } => {
            let filter = ApprovalFilter {
                status: Some(status),
                cursor: None,
                limit,
            };
            print(&c.list_approvals(&filter).await?)
        }
        ApprovalsCommand::Get { id } => print(&c.get_approval(&id).await?),
        ApprovalsCommand::Approve { id, comment } => print(&c.approve(&id, comment).await?),
        ApprovalsCommand::Deny { id, reason } => print(&c.deny(&id, reason).await?),
    }
}

async fn audit(remote: Remote, command: AuditCommand) -> anyhow::Result<()> {
    let c = client(&remote)?;
    match command {
        AuditCommand::List { cursor, limit } => {
            print(&c.audit_page(cursor.as_deref(), limit).await?)
        }
        AuditCommand::Verify => {
            let report = c.audit_verify().await?;
            match &report.first_broken {
                None => {
                    println!(
                        "audit chain intact: {} events verified",
                        report.events_checked
                    );
                    Ok(())
                }
                Some(broken) => {
                    println!(
                        "audit chain BROKEN at event {}: {}",
                        broken.seq, broken.reason
                    );
                    std::process::exit(1);
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let settings = load_settings(&args)?;
            countersign_server::migrate(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Healthcheck(remote) => {
            client(&remote)?.ready().await?;
            println!("ready");
            Ok(())
        }
        Command::Admin { remote, command } => admin(remote, command).await,
        Command::Approvals { remote, command } => approvals(remote, command).await,
        Command::Audit { remote, command } => audit(remote, command).await,
        Command::Mcp(command) => mcp::run(command).await,
    }
}
