//! The reviewer dashboard: server-rendered pages (askama) with vendored htmx, served under
//! `/ui`. Handlers are thin: they read the session, call the same services as the API, and
//! render. Nothing acts on GET; every POST from a signed-in person carries the session's
//! anti-forgery token; agent-supplied text is escaped by the templates.
mod admin;
mod auth;
mod guard;
mod notifications;
mod queue;
mod review;
mod views;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use countersign_core::Error;
use countersign_core::dashboard::{self, NewSession};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::accounts::{self, Viewer};
use crate::state::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     manifest-src 'self'";

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(|| async { Redirect::to("/ui/queue") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/queue") }))
        .route("/ui/sign-in", get(auth::sign_in_page))
        .route(
            "/ui/sign-in/link",
            get(auth::link_page).post(auth::redeem_link),
        )
        .route("/ui/sign-in/passkey/begin", post(auth::passkey_begin))
        .route("/ui/sign-in/passkey/finish", post(auth::passkey_finish))
        .route("/ui/invite", get(auth::invite_page))
        .route("/ui/invite/begin", post(auth::invite_begin))
        .route("/ui/invite/finish", post(auth::invite_finish))
        .route("/ui/sign-out", post(auth::sign_out))
        .route("/ui/account", get(auth::account))
        .route(
            "/ui/account/sessions/{id}/revoke",
            post(auth::revoke_session),
        )
        .route(
            "/ui/account/sessions/revoke-others",
            post(auth::revoke_other_sessions),
        )
        .route("/ui/account/passkeys/begin", post(auth::add_passkey_begin))
        .route(
            "/ui/account/passkeys/finish",
            post(auth::add_passkey_finish),
        )
        .route(
            "/ui/account/passkeys/{id}/remove",
            post(auth::remove_passkey),
        )
        .route("/ui/account/notifications", post(auth::save_notifications))
        .route(
            "/ui/account/push-subscriptions",
            post(auth::add_push_subscription),
        )
        .route(
            "/ui/account/push-subscriptions/{id}/remove",
            post(auth::remove_push_subscription),
        )
        .route("/ui/sw.js", get(service_worker))
        .route("/ui/queue", get(queue::queue_page))
        .route("/ui/queue/list", get(queue::queue_list))
        .route("/ui/history", get(queue::history))
        .route("/ui/events", get(queue::events))
        .route("/ui/requests/{id}", get(queue::request_page))
        .route("/ui/requests/{id}/panel", get(queue::panel))
        .route("/ui/requests/{id}/deliveries", get(queue::deliveries))
        .route("/ui/requests/{id}/approve", post(queue::approve))
        .route("/ui/requests/{id}/reject", post(queue::reject))
        .route("/ui/audit", get(admin::audit))
        .route("/ui/admin/users", get(admin::users))
        .route("/ui/admin/invitations", post(admin::invite))
        .route(
            "/ui/admin/invitations/{id}/revoke",
            post(admin::revoke_invitation),
        )
        .route(
            "/ui/admin/users/{id}/sign-in-link",
            post(admin::sign_in_link),
        )
        .route("/ui/admin/users/{id}/invite", post(admin::reinvite))
        .route("/ui/admin/users/{id}/role", post(admin::set_role))
        .route("/ui/admin/users/{id}/disable", post(admin::disable_user))
        .route(
            "/ui/admin/agents",
            get(admin::agents).post(admin::create_agent),
        )
        .route("/ui/admin/agents/{id}/keys", post(admin::create_agent_key))
        .route("/ui/admin/agents/{id}/disable", post(admin::disable_agent))
        .route("/ui/admin/admin-keys", post(admin::create_admin_key))
        .route("/ui/admin/keys/{id}/revoke", post(admin::revoke_key))
        .route("/ui/admin/guard", get(guard::guard_page))
        .route("/ui/admin/policies", post(guard::create_policy))
        .route(
            "/ui/admin/policies/check-condition",
            post(guard::check_condition),
        )
        .route("/ui/admin/policies/try", post(guard::try_policies))
        .route("/ui/admin/policies/{id}/toggle", post(guard::toggle_policy))
        .route("/ui/admin/policies/{id}/delete", post(guard::delete_policy))
        .route("/ui/admin/groups", post(guard::save_group))
        .route("/ui/admin/groups/{id}/delete", post(guard::delete_group))
        .route("/ui/admin/routing", post(guard::save_routing))
        .route("/ui/admin/settings", post(guard::save_settings))
        .route(
            "/ui/admin/notifications",
            get(notifications::notifications_page),
        )
        .route(
            "/ui/admin/notifications/email",
            post(notifications::save_email),
        )
        .route(
            "/ui/admin/notifications/slack",
            post(notifications::save_slack),
        )
        .route(
            "/ui/admin/notifications/teams",
            post(notifications::save_teams),
        )
        .route(
            "/ui/admin/notifications/{channel}/test",
            post(notifications::test_channel),
        )
        .route(
            "/ui/admin/notifications/{channel}/remove",
            post(notifications::remove_channel),
        )
        .route(
            "/ui/admin/notifications/webhooks",
            post(notifications::create_webhook),
        )
        .route(
            "/ui/admin/notifications/webhooks/{id}/rotate-secret",
            post(notifications::rotate_webhook_secret),
        )
        .route(
            "/ui/admin/notifications/webhooks/{id}/enable",
            post(notifications::enable_webhook),
        )
        .route(
            "/ui/admin/notifications/webhooks/{id}/delete",
            post(notifications::delete_webhook),
        )
        .route(
            "/ui/admin/notifications/webhooks/{id}/test",
            post(notifications::test_webhook),
        )
        .route(
            "/ui/admin/notifications/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(notifications::redeliver_webhook),
        )
        .route(
            "/ui/review",
            get(review::review_page).post(review::review_decide),
        )
        .route(
            "/ui/review/signed-in",
            post(review::review_decide_signed_in),
        )
        .route("/ui/manifest.webmanifest", get(manifest))
        .route("/ui/static/{name}", get(asset))
        .layer(middleware::from_fn_with_state(state, security_headers))
}

/// Headers every dashboard answer carries: a strict CSP (no inline script), no framing, no
/// referrer to other sites (links carry one-time tokens; same-origin keeps the `Origin` header
/// that form posts are checked by), HSTS when served over https, and no caching of pages
/// (they show who is signed in).
async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/ui/static/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages with one-time credentials in their URL send no referrer at all.
    if !h.contains_key(REFERRER_POLICY) {
        h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if state.issuer.starts_with("https://") {
        h.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if !is_asset && !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether the session cookie may go without `Secure`: only for a public URL on this machine
/// over plain http, where browsers would otherwise drop it.
fn insecure_cookie_allowed(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    url.scheme() == "http"
        && matches!(
            url.host_str(),
            Some("localhost") | Some("127.0.0.1") | Some("[::1]")
        )
}

fn cookie_name(state: &AppState) -> &'static str {
    if insecure_cookie_allowed(&state.issuer) {
        "countersign_session"
    } else {
        // The `__Host-` prefix makes browsers insist on Secure, Path=/ and no Domain.
        "__Host-countersign_session"
    }
}

fn session_cookie(state: &AppState, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if insecure_cookie_allowed(&state.issuer) {
        ""
    } else {
        "; Secure"
    };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
        cookie_name(state)
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The response that signs a new session in: the cookie, then on to `next`.
fn signed_in(state: &AppState, new: &NewSession, next: &str) -> Response {
    let max_age = (new.session.expires_at - new.session.created_at).num_seconds();
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, session_cookie(state, &new.token, max_age));
    response
}

fn session_token(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(state);
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A local path to go to after signing in; anything else goes to the queue.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains("://") => {
            n.to_string()
        }
        _ => "/ui/queue".to_string(),
    }
}

/// What the header and navigation show about the signed-in person.
pub struct NavUser {
    pub email: String,
    pub is_admin: bool,
    pub csrf: String,
}

pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub user: Option<NavUser>,
}

impl Layout {
    pub fn public(title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            nav: "",
            user: None,
        }
    }

    pub fn for_viewer(viewer: &Viewer, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            user: Some(NavUser {
                email: viewer.user.email.clone(),
                is_admin: viewer.principal.is_admin(),
                csrf: viewer.csrf.clone(),
            }),
        }
    }
}

/// Renders a template into an HTML response.
pub fn render<T: Template>(template: &T) -> Result<Response, UiError> {
    let html = template
        .render()
        .map_err(|e| UiError::from(Error::internal(e)))?;
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
    back: String,
    back_label: String,
}

/// An error on its way to a person: a page with the same status the API would use.
#[derive(Debug)]
pub enum UiError {
    /// Not signed in (or the session ended): off to the sign-in page.
    SignIn {
        next: String,
        htmx: bool,
    },
    Failed(Error),
}

impl From<Error> for UiError {
    fn from(e: Error) -> Self {
        UiError::Failed(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn { next, htmx } => {
                let to = format!("/ui/sign-in?next={}", urlencode(&next));
                if htmx {
                    // htmx follows this header with a full navigation.
                    let mut r = StatusCode::UNAUTHORIZED.into_response();
                    if let Ok(v) = HeaderValue::from_str(&to) {
                        r.headers_mut().insert("hx-redirect", v);
                    }
                    r
                } else {
                    Redirect::to(&to).into_response()
                }
            }
            UiError::Failed(e) => {
                let retry = matches!(e, Error::RateLimited { .. }).then(|| e.clone());
                let code = e.code();
                let status = StatusCode::from_u16(code.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let message = crate::error::public_message(&e);
                let heading = match status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::CONFLICT => "Already decided",
                    s if s.is_server_error() => "Server error",
                    _ => "That did not work",
                };
                let page = ErrorPage {
                    layout: Layout::public(heading),
                    heading: heading.into(),
                    message,
                    back: "/ui/queue".into(),
                    back_label: "Back to the queue".into(),
                };
                let mut response = match page.render() {
                    Ok(html) => (
                        [(
                            CONTENT_TYPE,
                            HeaderValue::from_static("text/html; charset=utf-8"),
                        )],
                        html,
                    )
                        .into_response(),
                    Err(_) => code.as_str().to_string().into_response(),
                };
                *response.status_mut() = status;
                if let Ok(v) = HeaderValue::from_str(code.as_str()) {
                    response.headers_mut().insert("x-error-code", v);
                }
                match retry {
                    Some(e) => crate::error::with_retry_after(&e, response),
                    None => response,
                }
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// A signed-in person, for pages. Without a live session: off to sign in.
impl FromRequestParts<AppState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sign_in = || UiError::SignIn {
            next: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            htmx: is_htmx(&parts.headers),
        };
        let Some(token) = session_token(state, &parts.headers) else {
            return Err(sign_in());
        };
        match accounts::viewer(state, &token).await? {
            Some(viewer) => {
                // A dashboard session is a credential like an API key, with the same rate.
                state.throttle.check_key(&viewer.principal.key_id)?;
                Ok(viewer)
            }
            None => Err(sign_in()),
        }
    }
}

/// Refuses a POST that another site made: browsers name the page's origin in `Origin`.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    match headers.get("origin").map(|v| v.to_str().unwrap_or("")) {
        None => Ok(()),
        Some(origin) if origin == &*state.issuer => Ok(()),
        Some(_) => Err(csrf_failed(
            "this form was sent from another site; it was refused",
        )),
    }
}

fn csrf_failed(message: &str) -> Error {
    Error::coded(countersign_proto::ErrorCode::CsrfFailed, message)
}

/// The anti-forgery token of a form, before the form's own fields.
#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(flatten)]
    form: T,
}

/// A POSTed form from a signed-in person, accepted only with the session's anti-forgery
/// token (form field `csrf` or header `X-CSRF-Token`) and not from another origin.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
    pub htmx: bool,
}

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = UiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        check_origin(state, &parts.headers)?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let htmx = is_htmx(&parts.headers);
        let request = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| Error::invalid(e.body_text()))?;
        // The token is checked before the fields, so a forged form learns nothing.
        let envelope: Envelope<serde_json::Value> = serde_urlencoded_value(&bytes)?;
        let token = envelope.csrf.or(header_token).unwrap_or_default();
        if !dashboard::tokens_match(&token, &viewer.csrf) {
            return Err(csrf_failed(
                "this form is missing its anti-forgery token or the token is stale; reload the page and try again",
            )
            .into());
        }
        let form: T = serde_json::from_value(envelope.form).map_err(|e| {
            Error::coded(
                countersign_proto::ErrorCode::InvalidBody,
                format!("the form is incomplete: {e}"),
            )
        })?;
        Ok(Posted { viewer, form, htmx })
    }
}

/// Parses a urlencoded body into JSON strings (every value a string; the last of repeated
/// keys wins), so fields can then be read with serde's ordinary rules.
fn serde_urlencoded_value(bytes: &[u8]) -> Result<Envelope<serde_json::Value>, Error> {
    let mut map = serde_json::Map::new();
    let mut csrf = None;
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if k == "csrf" {
            csrf = Some(v.into_owned());
        } else {
            map.insert(k.into_owned(), serde_json::Value::String(v.into_owned()));
        }
    }
    Ok(Envelope {
        csrf,
        form: serde_json::Value::Object(map),
    })
}

/// A JSON body from a signed-in person (passkey ceremonies), with the anti-forgery header.
pub struct PostedJson<T> {
    pub viewer: Viewer,
    pub body: T,
}

impl<T> FromRequest<AppState> for PostedJson<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = crate::error::ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        check_origin(state, &parts.headers)?;
        let viewer = match Viewer::from_request_parts(&mut parts, state).await {
            Ok(v) => v,
            Err(_) => return Err(Error::unauthorized("sign in first").into()),
        };
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !dashboard::tokens_match(token, &viewer.csrf) {
            return Err(csrf_failed("missing or stale anti-forgery token").into());
        }
        let request = Request::from_parts(parts, body);
        let crate::error::ApiJson(body) =
            crate::error::ApiJson::<T>::from_request(request, state).await?;
        Ok(PostedJson { viewer, body })
    }
}

/// A JSON body from someone not yet signed in (sign-in and invitation ceremonies); it must
/// not come from another origin.
pub struct PublicJson<T>(pub T);

impl<T> FromRequest<AppState> for PublicJson<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = crate::error::ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_origin(state, request.headers())?;
        let crate::error::ApiJson(body) =
            crate::error::ApiJson::<T>::from_request(request, state).await?;
        Ok(PublicJson(body))
    }
}

/// A form from someone not yet signed in; it must not come from another origin.
pub struct PublicForm<T>(pub T);

impl<T> FromRequest<AppState> for PublicForm<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = UiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_origin(state, request.headers())?;
        let axum::Form(form) = axum::Form::<T>::from_request(request, state)
            .await
            .map_err(|e| Error::invalid(e.body_text()))?;
        Ok(PublicForm(form))
    }
}

fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser")
        .to_string()
}

/// A notice on a page: its kind (`ok`, `warn`, `error`) and its words.
pub type Notice = (&'static str, String);

/// What a person's decision did, as a page shows it: the request as it now stands and a
/// notice. Refusals a person can act on (someone else decided first, not eligible, already
/// voted, a bad comment) become notices; anything else is an error page.
pub async fn decision_outcome(
    state: &AppState,
    request: countersign_core::approval::ApprovalRequest,
    verdict: countersign_core::approval::Verdict,
    outcome: Result<countersign_core::approval::ApprovalRequest, Error>,
) -> Result<(countersign_core::approval::ApprovalRequest, Notice), Error> {
    use countersign_core::approval::{RequestRef, Verdict};
    use countersign_proto::ApprovalStatus;
    let now = state.clock.now();
    Ok(match outcome {
        // A quorum still needs others: the vote counts, the request stays pending.
        Ok(decided) if decided.status_at(now) == ApprovalStatus::Pending => (
            decided,
            (
                "ok",
                "Your approval is recorded; the request needs more approvals.".to_string(),
            ),
        ),
        Ok(decided) => {
            let word = match verdict {
                Verdict::Approve => "Approved",
                Verdict::Reject => "Rejected",
            };
            (decided, ("ok", format!("{word}. The agent learns it now.")))
        }
        Err(Error::AlreadyDecided { status }) => {
            let current = crate::service::find(
                state,
                &request.tenant_id,
                &RequestRef::PublicId(request.id.clone()),
            )
            .await?;
            (current, ("warn", settled_words(status)))
        }
        Err(
            e @ (Error::AlreadyExists(_)
            | Error::Forbidden { .. }
            | Error::Invalid { .. }
            | Error::Conflict { .. }),
        ) => (request, ("error", e.to_string())),
        Err(e) => return Err(e),
    })
}

/// Why a request can no longer be decided.
pub fn settled_words(status: countersign_proto::ApprovalStatus) -> String {
    use countersign_proto::ApprovalStatus;
    match status {
        ApprovalStatus::Pending => "This request is still waiting for a decision.".into(),
        ApprovalStatus::Expired => "This request expired before anyone decided it.".into(),
        ApprovalStatus::Cancelled => "The agent withdrew this request.".into(),
        s => format!("This request was already decided: it is {}.", s.as_str()),
    }
}

/// Where a form goes after it worked: htmx swaps a fragment, a plain form follows a redirect.
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

async fn manifest(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "name": "Countersign",
        "short_name": "Countersign",
        "description": "Approve or reject what AI agents ask to do",
        "start_url": "/ui/queue",
        "scope": "/ui/",
        "display": "standalone",
        "background_color": "#f6f7f9",
        "theme_color": "#0f172a",
        "id": format!("{}/ui/", state.issuer),
        "icons": [
            {"src": "/ui/static/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
            {"src": "/ui/static/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
            {"src": "/ui/static/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"}
        ]
    });
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/manifest+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// The service worker that shows Web Push notifications. It lives at `/ui/sw.js` so that its
/// scope can be `/ui/`; browsers check it for updates, so it is not cached.
async fn service_worker() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from(&include_bytes!("../../static/sw.js")[..]),
    )
        .into_response()
}

/// The vendored and own static files, compiled into the binary.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (bytes, content_type): (&'static [u8], &'static str) = match name.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "passkey.js" => (
            include_bytes!("../../static/passkey.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_bytes!("../../static/style.css"),
            "text/css; charset=utf-8",
        ),
        "icon-192.png" => (include_bytes!("../../static/icon-192.png"), "image/png"),
        "icon-512.png" => (include_bytes!("../../static/icon-512.png"), "image/png"),
        _ => return UiError::from(Error::NotFound("no such file".into())).into_response(),
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        Body::from(bytes),
    )
        .into_response()
}
