//! Configuration: defaults, then a TOML file, then `COUNTERSIGN_*` environment variables
//! (`__` separates nesting: `COUNTERSIGN_TOKENS__LIFETIME_SECS`). Any `COUNTERSIGN_X_FILE`
//! variable sets `x` from the content of the file it names, for secrets.
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// The public base URL; it is the token issuer. Defaults to `http://<listen address>`.
    pub public_url: Option<String>,
    /// The first admin key of the `default` tenant, used on the first start only.
    pub bootstrap_admin_key: Option<String>,
    /// Create a demo agent and reviewer with keys on start, and print a curl walk-through.
    pub demo: bool,
    pub database: DatabaseSettings,
    pub tokens: TokenSettings,
    pub requests: RequestSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub dashboard: DashboardSettings,
    pub oidc: OidcSettings,
    pub outbound: OutboundSettings,
    pub notifications: NotificationSettings,
    pub limits: LimitSettings,
    pub metrics: MetricsSettings,
}

/// Who may read `/metrics` (it shows every tenant's counts). With neither setting the
/// metrics are not served at all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// A bearer token scrapers must send (`Authorization: Bearer …`, at least 16 characters).
    /// Without `listen`, it makes the main listener serve `/metrics`.
    pub token: Option<String>,
    /// A separate address (e.g. `127.0.0.1:9090`) that serves `/metrics`, and then only it
    /// does; the token, if set, is required there too.
    pub listen: Option<String>,
}

/// What one caller may ask of the server, and what one policy condition may cost. A rate or
/// count of 0 turns that limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests per second one API key may make, sustained.
    pub per_key_per_second: u32,
    /// Requests one API key may make at once after being idle.
    pub per_key_burst: u32,
    /// Requests per second one client address may make to the endpoints that take no API
    /// key: OpenID/OAuth, dashboard sign-in and invitation ceremonies, review links, Slack.
    pub per_ip_per_second: u32,
    /// Requests one client address may make at once to those endpoints after being idle.
    pub per_ip_burst: u32,
    /// Behind a reverse proxy: the header it puts the client's address in (`x-forwarded-for`:
    /// its last entry is taken, the one the proxy added). Unset: the connection's address.
    /// Set it only behind a proxy that sets the header, or clients choose their own address.
    pub client_ip_header: Option<String>,
    /// Failed attempts at a secret (a wrong `user_code`; an unusable sign-in, invitation or
    /// review link; a failed passkey) one client address or OpenID client may make per
    /// window; after that every attempt waits for the window to pass.
    pub failures_per_window: u32,
    pub failure_window_secs: u64,
    /// Pending requests one agent may have; more are refused until some are decided.
    pub max_pending_per_agent: u64,
    /// Comprehension steps one tool call's policy conditions may take in all.
    pub condition_max_steps: u64,
    /// Wall-clock time one tool call's policy conditions may take, in milliseconds
    /// (waiting for a free evaluation thread included).
    pub condition_deadline_ms: u64,
    /// Threads that evaluate policy conditions at the same time, off the request threads;
    /// 0: half the processors, at least one, so conditions never take every core.
    pub condition_workers: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_key_per_second: 1_000,
            per_key_burst: 2_000,
            per_ip_per_second: 200,
            per_ip_burst: 400,
            client_ip_header: None,
            failures_per_window: 10,
            failure_window_secs: 300,
            max_pending_per_agent: 10_000,
            condition_max_steps: 1_000_000,
            condition_deadline_ms: 250,
            condition_workers: 0,
        }
    }
}

/// How reviewers are told: the SMTP server, where Slack's Web API lives, Web Push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    pub email: EmailSettings,
    pub slack: SlackSettings,
    pub push: PushSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// `smtp://host:port` (plain, for a local relay), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host` (TLS). Unset: no email.
    pub smtp_url: Option<String>,
    /// The sender, e.g. `Countersign <approvals@example.com>`.
    pub from: Option<String>,
    /// Longest one SMTP conversation may take, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            smtp_url: None,
            from: None,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackSettings {
    /// Slack's Web API (tests point it at a local server).
    pub api_base_url: String,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            api_base_url: "https://slack.com/api".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// The VAPID contact push services may write to (`mailto:` or `https:`); defaults to the
    /// email sender or the public URL.
    pub subject: Option<String>,
    /// How long a push service keeps an undelivered notification, in seconds.
    pub ttl_secs: u64,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            subject: None,
            ttl_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// Key (at least 32 characters) from which `auth_req_id`s are derived. Unset: a random key
    /// kept in the store and shared by every replica.
    pub secret: Option<String>,
    /// RFC 9396 `authorization_details` types clients may send, each with the JSON Schema its
    /// objects must match.
    pub authorization_details_types: std::collections::BTreeMap<String, serde_json::Value>,
    /// Longest lifetime of a client assertion or a signed request (`exp` - `iat`/`nbf`), and
    /// how far in the past `nbf` may lie, in seconds.
    pub max_jwt_lifetime_secs: i64,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Lifetime of ID tokens, in seconds.
    pub id_token_lifetime_secs: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSettings {
    /// Allow callbacks to loopback, private, link-local and other non-public addresses.
    pub allow_private_networks: bool,
    /// Allow plain `http://` callback, webhook and push endpoints (otherwise https only).
    pub allow_http: bool,
    /// Connect timeout of outgoing calls, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Total timeout of one outgoing call, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts before a callback that keeps failing with network errors or 5xx is given up.
    pub max_attempts: i64,
    /// How often due callbacks are looked for when nothing wakes the worker, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for OidcSettings {
    fn default() -> Self {
        let mut types = std::collections::BTreeMap::new();
        types.insert(
            "tool_call".to_string(),
            serde_json::json!({
                "type": "object",
                "required": ["type", "tool"],
                "properties": {
                    "type": {"const": "tool_call"},
                    "tool": {"type": "string", "minLength": 1, "maxLength": 200},
                    "arguments": {"type": "object"},
                    "locations": {"type": "array", "items": {"type": "string"}},
                    "actions": {"type": "array", "items": {"type": "string"}}
                }
            }),
        );
        types.insert(
            "payment_initiation".to_string(),
            serde_json::json!({
                "type": "object",
                "required": ["type", "instructedAmount", "creditorName"],
                "properties": {
                    "type": {"const": "payment_initiation"},
                    "instructedAmount": {
                        "type": "object",
                        "required": ["currency", "amount"],
                        "properties": {
                            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                            "amount": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,2})?$"}
                        }
                    },
                    "creditorName": {"type": "string", "minLength": 1},
                    "creditorAccount": {"type": "object"},
                    "remittanceInformationUnstructured": {"type": "string"}
                }
            }),
        );
        OidcSettings {
            secret: None,
            authorization_details_types: types,
            max_jwt_lifetime_secs: 3600,
            jwt_leeway_secs: 5,
            id_token_lifetime_secs: 300,
        }
    }
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            allow_private_networks: false,
            allow_http: false,
            connect_timeout_ms: 2_000,
            timeout_ms: 5_000,
            max_attempts: 8,
            poll_interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    /// How long an invitation link stays valid, in seconds.
    pub invitation_ttl_secs: i64,
    /// How long a one-time sign-in link stays valid, in seconds.
    pub sign_in_link_ttl_secs: i64,
    /// A dashboard session unused this long ends, in seconds.
    pub session_idle_secs: i64,
    /// A dashboard session ends this long after sign-in, however active, in seconds.
    pub session_absolute_secs: i64,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            invitation_ttl_secs: 7 * 24 * 3600,
            sign_in_link_ttl_secs: 15 * 60,
            session_idle_secs: 3600,
            session_absolute_secs: 12 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` selects PostgreSQL (several replicas may share it); otherwise the
    /// embedded SQLite database under `data_dir` is used.
    pub url: Option<String>,
    /// PostgreSQL connections per replica.
    pub max_connections: u32,
    /// SQLite: `full` (fsync per group commit; survives power loss) or `normal` (survives
    /// crashes).
    pub synchronous: String,
    /// SQLite read connections.
    pub readers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// Lifetime of access tokens, in seconds.
    pub lifetime_secs: i64,
    /// `ES256` or `EdDSA`, for the key created on first start.
    pub algorithm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestSettings {
    pub default_expiry_secs: i64,
    pub min_expiry_secs: i64,
    pub max_expiry_secs: i64,
    /// Largest `context`, in bytes of canonical JSON.
    pub max_context_bytes: usize,
    /// The `interval` agents are told to poll at.
    pub poll_interval_secs: i64,
    /// Longest `waitSeconds` a poll may hold.
    pub max_wait_secs: u64,
    /// How often expired requests are swept, in milliseconds.
    pub sweep_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take (long-polls included), in seconds.
    pub request_timeout_secs: u64,
    /// Longest a graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `countersign_server=debug,info`.
    pub level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./countersign-data"),
            public_url: None,
            bootstrap_admin_key: None,
            demo: false,
            database: DatabaseSettings::default(),
            tokens: TokenSettings::default(),
            requests: RequestSettings::default(),
            http: HttpSettings::default(),
            log: LogSettings::default(),
            dashboard: DashboardSettings::default(),
            oidc: OidcSettings::default(),
            outbound: OutboundSettings::default(),
            notifications: NotificationSettings::default(),
            limits: LimitSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            max_connections: 16,
            synchronous: "full".into(),
            readers: 4,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            lifetime_secs: 300,
            algorithm: "ES256".into(),
        }
    }
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            default_expiry_secs: 300,
            min_expiry_secs: 10,
            max_expiry_secs: 86_400,
            max_context_bytes: 16 * 1024,
            poll_interval_secs: 5,
            max_wait_secs: 30,
            sweep_interval_ms: 1_000,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 60,
            shutdown_grace_secs: 35,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Defaults, then the TOML file (if given), then the environment, then `*_FILE` secrets.
    pub fn figment(config_file: Option<&Path>) -> anyhow::Result<Figment> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed("COUNTERSIGN_")
                .filter(|k| {
                    let k = k.as_str().to_ascii_lowercase();
                    !k.ends_with("_file") && !is_client_variable(&k)
                })
                .map(|k| env_key(k.as_str()).into()),
        );
        for (name, path) in std::env::vars() {
            let Some(key) = name
                .strip_prefix("COUNTERSIGN_")
                .and_then(|k| k.strip_suffix("_FILE"))
            else {
                continue;
            };
            if is_client_variable(&key.to_ascii_lowercase()) {
                continue;
            }
            let secret = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {name}={path}: {e}"))?;
            let key = env_key(key);
            figment = figment.merge(Serialized::global(&key, secret.trim_end().to_string()));
        }
        Ok(figment)
    }

    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Settings> {
        Ok(Settings::figment(config_file)?
            .extract()
            .map_err(Box::new)?)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("countersign.db")
    }
}

/// The setting an environment variable names: `__` nests, and the common
/// `COUNTERSIGN_DATABASE_URL` means `database.url`.
fn env_key(name: &str) -> String {
    let key = name.to_ascii_lowercase();
    if key == "database_url" {
        return "database.url".into();
    }
    key.replace("__", ".")
}

/// Variables the command-line client and the test suite read; they are not server settings.
fn is_client_variable(key: &str) -> bool {
    matches!(key, "url" | "key" | "config") || key.starts_with("test_")
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_environment_then_secret_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "countersign.toml",
                r#"
                listen = "0.0.0.0:9000"
                public_url = "https://approvals.example.com"
                [tokens]
                lifetime_secs = 120
                "#,
            )?;
            jail.create_file(
                "admin-key",
                "from-a-file-0123456789-0123456789-0123456789\n",
            )?;
            jail.set_env("COUNTERSIGN_TOKENS__LIFETIME_SECS", "90");
            jail.set_env("COUNTERSIGN_BOOTSTRAP_ADMIN_KEY_FILE", "admin-key");
            jail.create_file("metrics-token", "scrape-0123456789-0123456789\n")?;
            jail.set_env("COUNTERSIGN_METRICS__TOKEN_FILE", "metrics-token");
            // Variables of the command-line client are not server settings.
            jail.set_env("COUNTERSIGN_URL", "http://127.0.0.1:8080");
            jail.set_env("COUNTERSIGN_KEY", "csk_x");
            jail.set_env(
                "COUNTERSIGN_DATABASE_URL",
                "postgres://db.example.com/countersign",
            );
            let s =
                Settings::load(Some(Path::new("countersign.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.listen, "0.0.0.0:9000");
            assert_eq!(
                s.public_url.as_deref(),
                Some("https://approvals.example.com")
            );
            assert_eq!(s.tokens.lifetime_secs, 90, "environment beats the file");
            assert_eq!(s.tokens.algorithm, "ES256", "defaults fill the rest");
            assert_eq!(
                s.database.url.as_deref(),
                Some("postgres://db.example.com/countersign")
            );
            assert_eq!(
                s.bootstrap_admin_key.as_deref(),
                Some("from-a-file-0123456789-0123456789-0123456789")
            );
            assert_eq!(
                s.metrics.token.as_deref(),
                Some("scrape-0123456789-0123456789"),
                "nested secrets come from files too"
            );
            assert_eq!(s.metrics.listen, None);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_unreadable_secret_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"typo\"")?;
            assert!(Settings::load(Some(Path::new("bad.toml"))).is_err());
            jail.set_env(
                "COUNTERSIGN_BOOTSTRAP_ADMIN_KEY_FILE",
                "/nonexistent/secret",
            );
            let err = Settings::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("cannot read"), "{err}");
            Ok(())
        });
    }
}
