//! The confirmation page behind the buttons of emails and Teams cards. Opening it (GET)
//! changes nothing, however often a mail scanner fetches it; only its form's POST decides,
//! through the same service as every other face. A personal link carries the reviewer's
//! token; a shared link (a Teams channel) asks the reviewer to sign in first.
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, REFERRER_POLICY};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use countersign_core::approval::{ApprovalRequest, Face, RequestRef, Verdict};
use countersign_core::directory::User;
use countersign_core::notify::ReviewToken;
use countersign_core::{Error, Principal, secret};
use countersign_proto::ApprovalStatus;
use serde::Deserialize;

use super::{Layout, Posted, PublicForm, UiError, render, session_token, urlencode};
use crate::accounts::{self, Viewer};
use crate::notify::{channels, content};
use crate::service;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    verdict: Option<String>,
    #[serde(default)]
    via: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    verdict: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    via: Option<String>,
}

struct FormView {
    token: Option<String>,
    approval: Option<String>,
    via: Option<String>,
    csrf: Option<String>,
    verdict: String,
    reviewer: Option<String>,
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    layout: Layout,
    heading: String,
    facts: Option<content::Facts>,
    pairs: Vec<(&'static str, String)>,
    notice: Option<(&'static str, String)>,
    form: Option<FormView>,
    sign_in: Option<String>,
    dashboard: Option<String>,
}

/// Pages that carry a one-time credential: never cached, never sent on as a referrer.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn verdict_word(raw: Option<&str>) -> String {
    match raw {
        Some("reject") => "reject".into(),
        _ => "approve".into(),
    }
}

fn unusable() -> Error {
    Error::coded(
        countersign_proto::ErrorCode::LinkUnusable,
        "this review link is not valid; open the request from the dashboard instead",
    )
}

/// The reviewer and request a personal link names. A link stays usable to look at the
/// request's outcome after it was decided; deciding checks everything again.
async fn resolve_token(
    state: &AppState,
    token: &str,
) -> Result<(ReviewToken, User, ApprovalRequest), Error> {
    if !secret::looks_like_token(token) {
        return Err(unusable());
    }
    let Some(link) = state
        .store
        .find_review_token(&secret::hash_secret(token))
        .await?
    else {
        return Err(unusable());
    };
    let user = state
        .store
        .get_user(&link.tenant_id, &link.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(unusable)?;
    let request = service::find(
        state,
        &link.tenant_id,
        &RequestRef::PublicId(link.approval_id.clone()),
    )
    .await?;
    Ok((link, user, request))
}

/// Whether the tenant wants a dashboard sign-in before a link decides this request.
async fn needs_sign_in(state: &AppState, request: &ApprovalRequest) -> Result<bool, Error> {
    let threshold = channels::stored(state, &request.tenant_id)
        .await?
        .email
        .require_sign_in_above_risk;
    let risk = request.tool.as_ref().map(|t| t.risk_score).unwrap_or(0.0);
    Ok(threshold.is_some_and(|t| risk > t))
}

/// The signed-in person, if the browser has a live session.
async fn session_viewer(state: &AppState, headers: &HeaderMap) -> Result<Option<Viewer>, Error> {
    match session_token(state, headers) {
        Some(token) => accounts::viewer(state, &token).await,
        None => Ok(None),
    }
}

async fn page(
    state: &AppState,
    layout: Layout,
    request: &ApprovalRequest,
    form: Option<FormView>,
    notice: Option<(&'static str, String)>,
    sign_in: Option<String>,
) -> Result<Response, UiError> {
    let facts = content::facts_of(state, request).await?;
    let heading = match &form {
        Some(f) if f.verdict == "reject" => format!("Reject {}?", facts.action),
        Some(_) => format!("Approve {}?", facts.action),
        None => facts.action.clone(),
    };
    let mut pairs = facts.pairs();
    pairs.insert(0, ("Request", request.id.clone()));
    pairs.push(("Status", facts.outcome()));
    Ok(private(render(&ReviewPage {
        layout,
        heading,
        pairs,
        dashboard: Some(content::dashboard_url(state, &request.id)),
        facts: Some(facts),
        notice,
        form,
        sign_in,
    })?))
}

/// `GET /ui/review`: shows the request and, while it is pending, the form. Changes nothing.
pub async fn review_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReviewQuery>,
) -> Result<Response, UiError> {
    let verdict = verdict_word(q.verdict.as_deref());
    let now = state.clock.now();
    match (q.token, q.approval) {
        (Some(token), _) => {
            let (_, user, request) = resolve_token(&state, &token).await.map_err(private_error)?;
            if request.status_at(now) != ApprovalStatus::Pending {
                let notice = Some(("warn", super::settled_words(request.status_at(now))));
                return page(
                    &state,
                    Layout::public("Review"),
                    &request,
                    None,
                    notice,
                    None,
                )
                .await;
            }
            let viewer = session_viewer(&state, &headers).await?;
            let signed_in_as_reviewer = viewer.as_ref().is_some_and(|v| v.user.id == user.id);
            if needs_sign_in(&state, &request).await? && !signed_in_as_reviewer {
                let next = format!("/ui/requests/{}", request.id);
                let notice = Some((
                    "warn",
                    "This request's risk is high: sign in to the dashboard to decide it."
                        .to_string(),
                ));
                let sign_in = Some(format!("/ui/sign-in?next={}", urlencode(&next)));
                return page(
                    &state,
                    Layout::public("Review"),
                    &request,
                    None,
                    notice,
                    sign_in,
                )
                .await;
            }
            let form = FormView {
                token: Some(token),
                approval: None,
                via: None,
                csrf: None,
                verdict,
                reviewer: Some(user.email.clone()),
            };
            page(
                &state,
                Layout::public("Review"),
                &request,
                Some(form),
                None,
                None,
            )
            .await
        }
        (None, Some(approval)) => {
            // A shared link: the reviewer signs in, then decides as themselves.
            let Some(viewer) = session_viewer(&state, &headers).await? else {
                let mut next = format!(
                    "/ui/review?approval={}&verdict={verdict}",
                    urlencode(&approval)
                );
                if let Some(via) = &q.via {
                    next.push_str(&format!("&via={}", urlencode(via)));
                }
                return Err(UiError::SignIn { next, htmx: false });
            };
            let request =
                service::visible(&state, &viewer.principal, Face::Review, &approval).await?;
            let layout = Layout::for_viewer(&viewer, "Review", "queue");
            if request.status_at(now) != ApprovalStatus::Pending {
                let notice = Some(("warn", super::settled_words(request.status_at(now))));
                return page(&state, layout, &request, None, notice, None).await;
            }
            let form = FormView {
                token: None,
                approval: Some(request.id.clone()),
                via: q.via.filter(|v| v == "teams"),
                csrf: Some(viewer.csrf.clone()),
                verdict,
                reviewer: Some(viewer.user.email.clone()),
            };
            page(&state, layout, &request, Some(form), None, None).await
        }
        (None, None) => Err(private_error(unusable())),
    }
}

fn private_error(e: Error) -> UiError {
    UiError::Failed(e)
}

fn parse_verdict(raw: &str) -> Result<Verdict, Error> {
    match raw {
        "approve" => Ok(Verdict::Approve),
        "reject" => Ok(Verdict::Reject),
        _ => Err(Error::invalid("`verdict` must be approve or reject")),
    }
}

/// Decides and shows what happened (or why not).
async fn decide_and_show(
    state: &AppState,
    layout: Layout,
    principal: &Principal,
    request: ApprovalRequest,
    verdict: Verdict,
    comment: Option<String>,
    channel: &str,
) -> Result<Response, UiError> {
    let outcome = service::decide(
        state,
        principal,
        Face::Review,
        &RequestRef::PublicId(request.id.clone()),
        verdict,
        comment,
        channel,
    )
    .await;
    let (current, notice) = super::decision_outcome(state, request, verdict, outcome).await?;
    page(state, layout, &current, None, Some(notice), None).await
}

/// `POST /ui/review`: a personal link's form decides, once.
pub async fn review_decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    PublicForm(form): PublicForm<ReviewForm>,
) -> Result<Response, UiError> {
    let verdict = parse_verdict(&form.verdict)?;
    let token = form.token.ok_or_else(unusable)?;
    let (_, user, request) = resolve_token(&state, &token).await?;
    if needs_sign_in(&state, &request).await? {
        let viewer = session_viewer(&state, &headers).await?;
        if viewer.is_none_or(|v| v.user.id != user.id) {
            return Err(Error::forbidden(
                "this request's risk is high: sign in to the dashboard to decide it",
            )
            .into());
        }
    }
    decide_and_show(
        &state,
        Layout::public("Review"),
        &Principal::reviewer(&user.tenant_id, &user.id, "review-link"),
        request,
        verdict,
        form.comment,
        "email",
    )
    .await
}

/// `POST /ui/review/signed-in`: a shared link's form, from a signed-in reviewer.
pub async fn review_decide_signed_in(
    State(state): State<AppState>,
    posted: Posted<ReviewForm>,
) -> Result<Response, UiError> {
    let Posted { viewer, form, .. } = posted;
    let verdict = parse_verdict(&form.verdict)?;
    let approval = form
        .approval
        .ok_or_else(|| Error::invalid("missing field `approval`"))?;
    let request = service::visible(&state, &viewer.principal, Face::Review, &approval).await?;
    let channel = match form.via.as_deref() {
        Some("teams") => "teams",
        _ => "dashboard",
    };
    let layout = Layout::for_viewer(&viewer, "Review", "queue");
    decide_and_show(
        &state,
        layout,
        &viewer.principal,
        request,
        verdict,
        form.comment,
        channel,
    )
    .await
}
