//! Building and running the server.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::routing::{get, post, put};
use countersign_core::approval::RequestLimits;
use countersign_core::audit::Actor;
use countersign_core::directory::{self, MintedKey};
use countersign_core::{Clock, Error, SystemClock, secret};
use countersign_proto::ErrorCode;
use countersign_proto::TrustLevel;
use countersign_proto::admin::KeyRole;
use countersign_store::{PostgresOptions, SqliteOptions, Store, StoreConfig, Synchronous};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{error_response, method_not_allowed_fallback, not_found_fallback};
use crate::events::Events;
use crate::oidc::Oidc;
use crate::routes::{
    admin, approvals, audit, ciba, guard, meta, notifications, oauth, oidc, oidc_admin,
};
use crate::routes::{mcp_servers, webhooks};
use crate::settings::Settings;
use crate::signer::Signers;
use crate::state::AppState;
use crate::waiters::Waiters;
use crate::workers::Workers;
use crate::{telemetry, ui};

/// What the first start created; the generated admin key is shown only here.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Present when the key was generated (not given by `bootstrap_admin_key`).
    pub admin_key: Option<String>,
}

/// The demo principals and their fresh keys.
#[derive(Debug, Clone)]
pub struct DemoSetup {
    pub agent_id: String,
    pub agent_key: String,
    pub user_id: String,
    pub reviewer_key: String,
    pub reviewer_email: String,
    /// A one-time dashboard sign-in link for the demo reviewer, and when it expires.
    pub sign_in_url: String,
    pub sign_in_expires_at: chrono::DateTime<chrono::Utc>,
}

/// A built server, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    /// The separate `/metrics` listener (`metrics.listen`).
    metrics_listener: Option<TcpListener>,
    router: Router,
    pub state: AppState,
    pub bootstrap: Option<Bootstrap>,
    pub demo: Option<DemoSetup>,
    stop: watch::Sender<bool>,
}

/// A server serving in the background (tests and embedding).
pub struct RunningApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub base_url: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn build(settings: Settings) -> anyhow::Result<App> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

fn synchronous(value: &str) -> anyhow::Result<Synchronous> {
    match value {
        "full" => Ok(Synchronous::Full),
        "normal" => Ok(Synchronous::Normal),
        other => anyhow::bail!("database.synchronous must be `full` or `normal`, not {other:?}"),
    }
}

fn limits(settings: &Settings) -> anyhow::Result<RequestLimits> {
    let r = &settings.requests;
    anyhow::ensure!(
        0 < r.min_expiry_secs
            && r.min_expiry_secs <= r.default_expiry_secs
            && r.default_expiry_secs <= r.max_expiry_secs,
        "requests: need 0 < min_expiry_secs <= default_expiry_secs <= max_expiry_secs"
    );
    anyhow::ensure!(
        settings.tokens.lifetime_secs > 0,
        "tokens.lifetime_secs must be positive"
    );
    Ok(RequestLimits {
        default_expiry_secs: r.default_expiry_secs,
        min_expiry_secs: r.min_expiry_secs,
        max_expiry_secs: r.max_expiry_secs,
        max_context_bytes: r.max_context_bytes,
        ..RequestLimits::default()
    })
}

fn store_config(settings: &Settings) -> anyhow::Result<StoreConfig> {
    match settings.database.url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let mut options = PostgresOptions::new(url);
            options.max_connections = settings.database.max_connections;
            Ok(StoreConfig::Postgres(options))
        }
        Some(other) => anyhow::bail!(
            "database.url must be a postgres:// URL (leave it unset for the embedded SQLite); got a {} URL",
            other.split(':').next().unwrap_or("malformed")
        ),
        None => {
            let mut options = SqliteOptions::new(settings.db_path());
            options.synchronous = synchronous(&settings.database.synchronous)?;
            options.readers = settings.database.readers;
            Ok(StoreConfig::Sqlite(options))
        }
    }
}

/// Opens the store, applying pending migrations, and closes it.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    Store::open(store_config(settings)?).await?;
    Ok(())
}

/// Builds the server with a given clock (tests drive time with a `ManualClock`).
pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    telemetry::install_metrics();
    let limits = limits(&settings)?;
    let store = Store::open(store_config(&settings)?)
        .await
        .context("opening the store")?;
    if let Some(token) = &settings.metrics.token {
        anyhow::ensure!(
            token.chars().count() >= 16,
            "metrics.token must be at least 16 characters"
        );
    }
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let metrics_listener = match &settings.metrics.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    let issuer = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let bootstrap = bootstrap(&store, &settings, clock.as_ref()).await?;
    let signer =
        Signers::load_or_create(&store, &settings.tokens.algorithm, clock.as_ref()).await?;
    let oidc = Oidc::new(&settings, &store, clock.as_ref())
        .await
        .context("setting up OpenID Connect")?;
    let notifier = crate::notify::Notifier::new(&settings, &issuer, &store, clock.as_ref())
        .await
        .context("setting up notifications")?;
    let (stop, stopping) = watch::channel(false);
    let webauthn = crate::accounts::relying_party(&issuer)?.map(Arc::new);
    let settings_limits = settings.limits.clone();
    let mcp_gateway = crate::mcp_gateway::Gateway::new(&settings.outbound, stopping.clone())?;
    let state = AppState::new(crate::state::Shared {
        store,
        clock,
        signer: Arc::new(signer),
        waiters: Arc::new(Waiters::default()),
        settings: Arc::new(settings),
        limits: Arc::new(limits),
        issuer: issuer.into(),
        guard: Arc::new(countersign_core::policy::GuardCache::default()),
        guard_loading: Arc::new(tokio::sync::Mutex::new(())),
        risk: Arc::new(countersign_core::risk::KeywordRisk),
        stopping,
        events: Arc::new(Events::default()),
        webauthn,
        oidc: Arc::new(oidc),
        notifier: Arc::new(notifier),
        conditions: Arc::new(crate::conditions::ConditionRunner::new(&settings_limits)),
        throttle: Arc::new(crate::throttle::Throttle::new(&settings_limits)),
        principals: Arc::default(),
        mcp: Arc::new(mcp_gateway),
    });
    let demo = if state.settings.demo {
        Some(demo(&state).await?)
    } else {
        None
    };
    let router = router(state.clone());
    Ok(App {
        listener,
        metrics_listener,
        router,
        state,
        bootstrap,
        demo,
        stop,
    })
}

/// On the first start: the `default` tenant and its admin key.
async fn bootstrap(
    store: &Store,
    settings: &Settings,
    clock: &dyn Clock,
) -> anyhow::Result<Option<Bootstrap>> {
    if store.has_tenants().await? {
        return Ok(None);
    }
    let now = clock.now();
    let tenant = directory::new_tenant(admin::ROOT_TENANT, Some("Default"), now)?;
    let mut key = directory::mint_key(
        &tenant.id,
        KeyRole::Admin,
        None,
        None,
        Some("bootstrap admin key".into()),
        now,
    )?;
    let generated = match &settings.bootstrap_admin_key {
        Some(given) => {
            directory::operator_key(given)?;
            key = MintedKey {
                record: directory::ApiKey {
                    key_hash: secret::hash_secret(given),
                    prefix: secret::display_prefix(given),
                    ..key.record
                },
                secret: given.clone(),
            };
            false
        }
        None => true,
    };
    match store
        .create_tenant(tenant, key.clone(), Actor::system("bootstrap"))
        .await
    {
        Ok(()) => Ok(Some(Bootstrap {
            admin_key: generated.then_some(key.secret),
        })),
        // Another replica bootstrapped first.
        Err(Error::AlreadyExists(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

const DEMO_AGENT: &str = "demo-agent";
const DEMO_REVIEWER: &str = "reviewer@example.com";

/// Demo principals in `default` (created once) with fresh keys on every start.
async fn demo(state: &AppState) -> anyhow::Result<DemoSetup> {
    let tenant = admin::ROOT_TENANT;
    let now = state.clock.now();
    let actor = Actor::system("demo");
    let store = &state.store;
    let agent = match store
        .list_agents(tenant)
        .await?
        .into_iter()
        .find(|a| a.name == DEMO_AGENT)
    {
        Some(a) => a,
        None => {
            store
                .create_agent(
                    directory::new_agent(tenant, DEMO_AGENT, TrustLevel::Standard, now)?,
                    actor.clone(),
                )
                .await?
        }
    };
    let user = match store
        .list_users(tenant)
        .await?
        .into_iter()
        .find(|u| u.email == DEMO_REVIEWER)
    {
        Some(u) => u,
        None => {
            store
                .create_user(
                    directory::new_user(tenant, DEMO_REVIEWER, "Demo Reviewer", now)?,
                    actor.clone(),
                )
                .await?
        }
    };
    let agent_key = directory::mint_key(
        tenant,
        KeyRole::Agent,
        None,
        Some(agent.id.clone()),
        Some("demo".into()),
        now,
    )?;
    store
        .create_api_key(agent_key.record.clone(), actor.clone())
        .await?;
    let reviewer_key = directory::mint_key(
        tenant,
        KeyRole::Reviewer,
        Some(user.id.clone()),
        None,
        Some("demo".into()),
        now,
    )?;
    store
        .create_api_key(reviewer_key.record.clone(), actor.clone())
        .await?;
    let link = crate::accounts::issue(
        state,
        actor,
        user.clone(),
        countersign_core::dashboard::LinkKind::SignIn,
    )
    .await?;
    Ok(DemoSetup {
        agent_id: agent.id,
        agent_key: agent_key.secret,
        user_id: user.id,
        reviewer_key: reviewer_key.secret,
        reviewer_email: user.email,
        sign_in_url: link.url,
        sign_in_expires_at: link.link.expires_at,
    })
}

fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let api = Router::new()
        .route("/ciba/authorize", post(ciba::authorize))
        .route("/ciba/token", get(ciba::token))
        .route("/ciba/approve", post(ciba::approve))
        .route("/ciba/deny", post(ciba::deny))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/approvals/{id}/reject", post(approvals::deny))
        .route(
            "/v1/admin/users",
            post(admin::create_user).get(admin::list_users),
        )
        .route("/v1/admin/users/{id}", get(admin::get_user))
        .route("/v1/admin/users/{id}/disable", post(admin::disable_user))
        .route(
            "/v1/admin/agents",
            post(admin::create_agent).get(admin::list_agents),
        )
        .route("/v1/admin/agents/{id}", get(admin::get_agent))
        .route("/v1/admin/agents/{id}/disable", post(admin::disable_agent))
        .route(
            "/v1/admin/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        )
        .route(
            "/v1/admin/api-keys/{id}/revoke",
            post(admin::revoke_api_key),
        )
        .route("/v1/admin/tenants", post(admin::create_tenant))
        .route(
            "/v1/admin/signing-keys/rotate",
            post(admin::rotate_signing_key),
        )
        .route("/v1/guard/{proxy_id}/tool", post(guard::tool))
        .route(
            "/mcp/{id}",
            get(crate::mcp_gateway::endpoint)
                .post(crate::mcp_gateway::endpoint)
                .delete(crate::mcp_gateway::endpoint),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/history",
            get(guard::history),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/{approval_id}",
            get(guard::get_approval),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/{approval_id}/approve",
            post(guard::approve),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/{approval_id}/reject",
            post(guard::reject),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/{approval_id}/cancel",
            post(guard::cancel),
        )
        .route(
            "/v1/guard/{proxy_id}/approvals/{approval_id}/grant",
            post(guard::grant),
        )
        .route(
            "/v1/guard/{proxy_id}/policies",
            post(guard::create_policy).get(guard::list_policies),
        )
        .route(
            "/v1/guard/{proxy_id}/policies/evaluate",
            post(guard::evaluate),
        )
        .route(
            "/v1/guard/{proxy_id}/policies/{policy_id}",
            get(guard::get_policy)
                .put(guard::update_policy)
                .delete(guard::delete_policy),
        )
        .route(
            "/v1/guard/{proxy_id}/approval-groups",
            post(guard::create_group).get(guard::list_groups),
        )
        .route(
            "/v1/guard/{proxy_id}/approval-groups/{group_id}",
            get(guard::get_group)
                .put(guard::update_group)
                .delete(guard::delete_group),
        )
        .route(
            "/v1/guard/{proxy_id}/routing-rules",
            get(guard::get_routing).put(guard::put_routing),
        )
        .route(
            "/v1/guard/{proxy_id}/settings",
            get(guard::get_settings).put(guard::put_settings),
        )
        .route(
            "/v1/admin/oidc-clients",
            post(oidc_admin::create).get(oidc_admin::list),
        )
        .route(
            "/v1/admin/oidc-clients/{id}",
            get(oidc_admin::get).delete(oidc_admin::delete),
        )
        .route(
            "/v1/admin/mcp-servers",
            post(mcp_servers::create).get(mcp_servers::list),
        )
        .route(
            "/v1/admin/mcp-servers/{id}",
            get(mcp_servers::get)
                .put(mcp_servers::update)
                .delete(mcp_servers::delete),
        )
        .route(
            "/v1/admin/users/{id}/user-code",
            axum::routing::put(oidc_admin::set_user_code),
        )
        .route(crate::oidc::DISCOVERY_PATH, get(oidc::discovery))
        .route(crate::oidc::BC_AUTHORIZE_PATH, post(oidc::bc_authorize))
        .route(crate::oidc::TOKEN_PATH, post(oidc::token))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(meta::metrics))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/openapi.json", get(meta::openapi))
        .route(
            "/v1/admin/invitations",
            post(admin::create_invitation).get(admin::list_invitations),
        )
        .route(
            "/v1/admin/invitations/{id}/revoke",
            post(admin::revoke_invitation),
        )
        .route("/v1/admin/sign-in-links", post(admin::create_sign_in_link))
        .route(
            "/v1/admin/notification-channels",
            get(notifications::get_channels),
        )
        .route(
            "/v1/admin/notification-channels/email",
            put(notifications::put_email).delete(notifications::delete_email),
        )
        .route(
            "/v1/admin/notification-channels/slack",
            put(notifications::put_slack).delete(notifications::delete_slack),
        )
        .route(
            "/v1/admin/notification-channels/teams",
            put(notifications::put_teams).delete(notifications::delete_teams),
        )
        .route(
            "/v1/admin/notification-channels/{channel}/test",
            post(notifications::test_channel),
        )
        .route(
            "/v1/me/notification-preferences",
            get(notifications::get_my_preferences).put(notifications::put_my_preferences),
        )
        .route(
            "/v1/admin/users/{id}/notification-preferences",
            get(notifications::get_user_preferences).put(notifications::put_user_preferences),
        )
        .route(
            "/v1/approvals/{id}/deliveries",
            get(notifications::request_deliveries),
        )
        .route(
            "/integrations/slack/{tenant}/interactivity",
            post(crate::routes::slack::interactivity),
        )
        .route(
            "/v1/admin/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/v1/admin/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/v1/admin/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/admin/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/v1/admin/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/v1/admin/webhooks/{id}/test", post(webhooks::test))
        .merge(ui::router(state.clone()))
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::throttle::by_address,
        ))
        .layer(middleware::from_fn(telemetry::track))
        .layer(DefaultBodyLimit::max(settings.http.max_body_bytes))
        .with_state(state);
    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // The path only: query strings can carry secrets (authReqId).
                // The tenant is recorded once the caller is known (`auth::record_tenant`).
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id,
                    tenant_id = tracing::field::Empty)
            }))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(|_| {
                error_response(ErrorCode::Internal, "internal error".into(), None)
            }))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(settings.http.request_timeout_secs),
            )),
    )
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// Where `/metrics` is served when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            metrics_listener,
            router,
            state,
            stop,
            ..
        } = self;
        let metrics_server = metrics_listener.map(|l| {
            let app = Router::new()
                .route("/metrics", get(meta::metrics_listener))
                .fallback(not_found_fallback)
                .with_state(state.clone());
            let mut stopping = stop.subscribe();
            tokio::spawn(async move {
                let served = axum::serve(l, app.into_make_service())
                    .with_graceful_shutdown(async move {
                        let _ = stopping.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the metrics listener failed");
                }
            })
        });
        let workers = Workers::start(&state, &stop);
        let grace = Duration::from_secs(state.settings.http.shutdown_grace_secs);
        let (drained_tx, drained_rx) = oneshot::channel::<()>();
        let stop_for_signal = stop.clone();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_for_signal.send(true);
            let _ = drained_tx.send(());
        });
        let served = async {
            server.await?;
            Ok::<(), anyhow::Error>(())
        };
        tokio::pin!(served);
        tokio::select! {
            r = &mut served => r?,
            _ = async {
                let _ = drained_rx.await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("in-flight requests did not finish within the grace period"),
        }
        let _ = stop.send(true);
        workers.join().await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        Ok(())
    }

    /// Serves in the background; stop it with [`RunningApp::stop`].
    pub fn spawn(self) -> RunningApp {
        let addr = self.local_addr();
        let metrics_addr = self.metrics_addr();
        let state = self.state.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        RunningApp {
            addr,
            metrics_addr,
            base_url: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }
}

impl RunningApp {
    /// Stops serving and waits until the server has finished.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await??;
        }
        Ok(())
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
