//! The queue, a request's page with its decision, the history, and the live event stream.
use std::convert::Infallible;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use countersign_core::approval::{ApprovalRequest, Face, RequestRef, Verdict};
use countersign_core::notify;
use countersign_core::{Error, Principal, ids};
use countersign_proto::{ApprovalStatus, TrustLevel};
use countersign_store::RequestFilter;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use super::views::{self, Count, DeliveryRow, Detail, Names, Opt, Panel, Row, Targets};
use super::{Layout, Posted, UiError, render};
use crate::accounts::Viewer;
use crate::events::{RequestEvent, RequestEventKind};
use crate::service;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

pub struct Filter {
    pub status: String,
    pub agent: String,
    pub q: String,
}

/// The list part of the queue and history pages (also served alone for live reloads).
#[derive(Template)]
#[template(path = "queue_list.html")]
pub struct ListFragment {
    filter: Filter,
    counts: Vec<Count>,
    rows: Vec<Row>,
    next_cursor: Option<String>,
    base_path: &'static str,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    layout: Layout,
    filter: Filter,
    status_options: Vec<Opt>,
    agent_options: Vec<Opt>,
    counts: Vec<Count>,
    rows: Vec<Row>,
    next_cursor: Option<String>,
    base_path: &'static str,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    layout: Layout,
    filter: Filter,
    status_options: Vec<Opt>,
    agent_options: Vec<Opt>,
    counts: Vec<Count>,
    rows: Vec<Row>,
    next_cursor: Option<String>,
    base_path: &'static str,
}

pub async fn names(state: &AppState, tenant_id: &str) -> Result<Names, Error> {
    let agents = state.store.list_agents(tenant_id).await?;
    let users = state.store.list_users(tenant_id).await?;
    Ok(Names {
        agents: agents.into_iter().map(|a| (a.id.clone(), a)).collect(),
        users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
    })
}

const QUEUE_STATUSES: [&str; 6] = [
    "pending",
    "approved",
    "rejected",
    "expired",
    "cancelled",
    "all",
];
const HISTORY_STATUSES: [&str; 5] = ["decided", "approved", "rejected", "expired", "cancelled"];

/// Reads one page of requests the viewer may see, filtered as asked.
async fn list(
    state: &AppState,
    principal: &Principal,
    query: &ListQuery,
    allowed: &[&str],
    base_path: &'static str,
) -> Result<(ListFragment, Names), Error> {
    let status = query
        .status
        .as_deref()
        .filter(|s| allowed.contains(s))
        .unwrap_or(allowed[0])
        .to_string();
    let store_status = match status.as_str() {
        "all" | "decided" => None,
        s => ApprovalStatus::parse(s),
    };
    if query
        .cursor
        .as_deref()
        .is_some_and(|c| !c.is_empty() && !ids::is_id(c, ids::APPROVAL))
    {
        return Err(Error::invalid("that page link is not one this server made"));
    }
    let now = state.clock.now();
    let user_id = principal.visible_reviewer()?.map(str::to_string);
    let page = state
        .store
        .list_requests(
            &principal.tenant_id,
            &RequestFilter {
                status: store_status,
                user_id: user_id.clone(),
                before_id: query.cursor.clone().filter(|c| !c.is_empty()),
                ..RequestFilter::new(now, 100)
            },
        )
        .await?;
    let names = names(state, &principal.tenant_id).await?;
    let agent = query.agent.clone().unwrap_or_default();
    let q = query.q.clone().unwrap_or_default();
    let needle = q.trim().to_lowercase();
    let next_cursor = if page.has_more {
        page.items.last().map(|r| r.id.clone())
    } else {
        None
    };
    let rows = page
        .items
        .iter()
        .filter(|r| status != "decided" || r.status_at(now) != ApprovalStatus::Pending)
        .filter(|r| agent.is_empty() || r.agent_id == agent)
        .filter(|r| {
            needle.is_empty()
                || views::what(r).to_lowercase().contains(&needle)
                || r.binding_message.to_lowercase().contains(&needle)
        })
        .map(|r| views::row(r, &names, now))
        .collect();
    let counts = state
        .store
        .count_requests(&principal.tenant_id, user_id.as_deref(), now)
        .await?
        .into_iter()
        .map(|(s, count)| Count {
            status: s.as_str(),
            label: views::status_label(s.as_str()),
            count,
            current: s.as_str() == status,
        })
        .collect();
    Ok((
        ListFragment {
            filter: Filter { status, agent, q },
            counts,
            rows,
            next_cursor,
            base_path,
        },
        names,
    ))
}

fn options(values: &[&str], current: &str) -> Vec<Opt> {
    values
        .iter()
        .map(|v| Opt {
            value: v.to_string(),
            label: views::status_label(v).to_string(),
            selected: *v == current,
        })
        .collect()
}

fn agent_options(names: &Names, current: &str) -> Vec<Opt> {
    let mut agents: Vec<_> = names.agents.values().collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    agents
        .into_iter()
        .map(|a| Opt {
            value: a.id.clone(),
            label: a.name.clone(),
            selected: a.id == current,
        })
        .collect()
}

pub async fn queue_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Response, UiError> {
    let (list, names) = list(
        &state,
        &viewer.principal,
        &query,
        &QUEUE_STATUSES,
        "/ui/queue",
    )
    .await?;
    render(&QueuePage {
        layout: Layout::for_viewer(&viewer, "Queue", "queue"),
        status_options: options(&QUEUE_STATUSES, &list.filter.status),
        agent_options: agent_options(&names, &list.filter.agent),
        filter: list.filter,
        counts: list.counts,
        rows: list.rows,
        next_cursor: list.next_cursor,
        base_path: list.base_path,
    })
}

pub async fn queue_list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Response, UiError> {
    let (list, _) = list(
        &state,
        &viewer.principal,
        &query,
        &QUEUE_STATUSES,
        "/ui/queue",
    )
    .await?;
    render(&list)
}

pub async fn history(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> Result<Response, UiError> {
    let (list, names) = list(
        &state,
        &viewer.principal,
        &query,
        &HISTORY_STATUSES,
        "/ui/history",
    )
    .await?;
    render(&HistoryPage {
        layout: Layout::for_viewer(&viewer, "History", "history"),
        status_options: options(&HISTORY_STATUSES, &list.filter.status),
        agent_options: agent_options(&names, &list.filter.agent),
        filter: list.filter,
        counts: list.counts,
        rows: list.rows,
        next_cursor: list.next_cursor,
        base_path: list.base_path,
    })
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    layout: Layout,
    r: Detail,
    panel: Panel,
    /// Admins see who was notified.
    deliveries: Option<DeliveryLog>,
}

/// Who was notified about a request, on which channel, and how it went.
pub struct DeliveryLog {
    pub id: String,
    pub rows: Vec<DeliveryRow>,
    /// Whether more may still happen (the request is open, a delivery is pending, or it
    /// changed moments ago): the log then reloads itself.
    pub live: bool,
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesFragment {
    log: DeliveryLog,
}

#[derive(Template)]
#[template(path = "panel.html")]
struct PanelFragment {
    panel: Panel,
}

/// Whether the viewer may decide the request now, by the same rule the service applies.
async fn may_decide(
    state: &AppState,
    principal: &Principal,
    request: &ApprovalRequest,
) -> Result<bool, Error> {
    match service::may_decide(state, principal, request).await {
        Ok(()) => Ok(true),
        Err(Error::Forbidden { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

async fn page_parts(
    state: &AppState,
    viewer: &Viewer,
    request: &ApprovalRequest,
    notice: Option<(&'static str, String)>,
) -> Result<(Detail, Panel), Error> {
    let names = names(state, &viewer.principal.tenant_id).await?;
    let may_decide = may_decide(state, &viewer.principal, request).await?;
    let now = state.clock.now();
    let mut panel = views::panel(request, &names, may_decide, &viewer.csrf, now);
    panel.notice = notice;
    let decisions = state.store.list_decisions(&request.id).await?;
    let group_name = match &request.rules.approval_group_id {
        Some(g) => state
            .store
            .get_group(&request.tenant_id, g)
            .await?
            .map(|g| g.name),
        None => None,
    };
    Ok((
        views::detail(request, &names, &decisions, group_name, now),
        panel,
    ))
}

/// How long after a request settled its log keeps reloading (follow-ups are being sent).
const SETTLING_SECS: i64 = 120;

/// The delivery log of a request, for admins (as the API's delivery log).
async fn delivery_log(
    state: &AppState,
    principal: &Principal,
    request: &ApprovalRequest,
) -> Result<Option<DeliveryLog>, Error> {
    let tenant = &principal.tenant_id;
    let deliveries = state.store.list_deliveries(tenant, &request.id).await?;
    let names = names(state, tenant).await?;
    let has = |channel: &str| deliveries.iter().any(|d| d.channel == channel);
    let mut targets = Targets::default();
    if has(notify::TEAMS) {
        targets.groups = state
            .store
            .list_groups(tenant)
            .await?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect();
    }
    if has(notify::PUSH) {
        targets.devices = state
            .store
            .list_push_subscriptions(tenant)
            .await?
            .into_iter()
            .map(|s| (s.id, (s.user_id, s.user_agent)))
            .collect();
    }
    if has(notify::WEBHOOK) {
        targets.webhooks = state
            .store
            .list_webhooks(tenant)
            .await?
            .into_iter()
            .map(|w| (w.id, w.description))
            .collect();
    }
    let now = state.clock.now();
    let settled_at = match request.status_at(now) {
        ApprovalStatus::Pending => None,
        _ => Some(request.decided_at.unwrap_or(request.expires_at)),
    };
    let live = settled_at.is_none_or(|at| (now - at).num_seconds() < SETTLING_SECS)
        || deliveries.iter().any(|d| d.is_pending());
    Ok(Some(DeliveryLog {
        id: request.id.clone(),
        rows: deliveries
            .into_iter()
            .map(|d| views::delivery_row(d, &names, &targets))
            .collect(),
        live,
    }))
}

async fn full_page(
    state: &AppState,
    viewer: &Viewer,
    request: &ApprovalRequest,
    notice: Option<(&'static str, String)>,
) -> Result<Response, UiError> {
    let (r, panel) = page_parts(state, viewer, request, notice).await?;
    let deliveries = delivery_log(state, &viewer.principal, request).await?;
    render(&RequestPage {
        layout: Layout::for_viewer(viewer, r.what.clone(), "queue"),
        r,
        panel,
        deliveries,
    })
}

/// The delivery log alone, as the request page reloads it.
pub async fn deliveries(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let request = service::visible(&state, &viewer.principal, Face::Review, &id).await?;
    match delivery_log(&state, &viewer.principal, &request).await? {
        Some(log) => render(&DeliveriesFragment { log }),
        None => Err(Error::NotFound("no delivery log".into()).into()),
    }
}

pub async fn request_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let request = service::visible(&state, &viewer.principal, Face::Review, &id).await?;
    full_page(&state, &viewer, &request, None).await
}

pub async fn panel(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let request = service::visible(&state, &viewer.principal, Face::Review, &id).await?;
    let (_, panel) = page_parts(&state, &viewer, &request, None).await?;
    render(&PanelFragment { panel })
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<DecideForm>,
) -> Result<Response, UiError> {
    let comment = posted.form.comment.clone();
    decide(state, id, posted, Verdict::Approve, comment).await
}

pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<DecideForm>,
) -> Result<Response, UiError> {
    let reason = posted.form.reason.clone();
    decide(state, id, posted, Verdict::Reject, reason).await
}

/// Decides through the same service as every other face, then shows the outcome at once;
/// when someone else decided first, shows that instead.
async fn decide(
    state: AppState,
    id: String,
    posted: Posted<DecideForm>,
    verdict: Verdict,
    text: Option<String>,
) -> Result<Response, UiError> {
    let viewer = &posted.viewer;
    let request = service::visible(&state, &viewer.principal, Face::Review, &id).await?;
    let text = text.filter(|t| !t.trim().is_empty());
    let outcome = if verdict == Verdict::Reject && text.is_none() {
        Err(Error::invalid("give a reason to reject"))
    } else {
        service::decide(
            &state,
            &viewer.principal,
            Face::Review,
            &RequestRef::PublicId(request.id.clone()),
            verdict,
            text,
            "dashboard",
        )
        .await
    };
    let (current, notice) = super::decision_outcome(&state, request, verdict, outcome).await?;
    if posted.htmx {
        let (_, panel) = page_parts(&state, viewer, &current, Some(notice)).await?;
        render(&PanelFragment { panel })
    } else {
        full_page(&state, viewer, &current, Some(notice)).await
    }
}

/// Whether the viewer may learn of this event: same tenant, and a request they may see.
async fn visible(state: &AppState, principal: &Principal, event: &RequestEvent) -> bool {
    if event
        .tenant_id
        .as_deref()
        .is_some_and(|t| t != principal.tenant_id)
    {
        return false;
    }
    let Some(id) = &event.request_id else {
        return true;
    };
    service::visible(state, principal, Face::Review, id)
        .await
        .is_ok()
}

fn sse_event(kind: RequestEventKind, id: Option<&str>) -> Event {
    let data = serde_json::json!({"kind": kind.as_str(), "id": id});
    Event::default().event("request").data(data.to_string())
}

enum Step {
    Send(Event),
    Skip,
    End,
}

/// Server-sent events for the live queue and request pages: which requests changed, never
/// what they contain (the page re-reads what it shows). The stream ends with its session.
pub async fn events(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    viewer: Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let token = super::session_token(&state, &headers).unwrap_or_default();
    let principal = viewer.principal;
    let lookup = state.clone();
    let stream = BroadcastStream::new(state.events.subscribe())
        .then(move |item| {
            let state = lookup.clone();
            let principal = principal.clone();
            let token = token.clone();
            async move {
                // Signed out, revoked elsewhere or timed out: no more news.
                if !matches!(crate::accounts::viewer(&state, &token).await, Ok(Some(_))) {
                    return Step::End;
                }
                match item {
                    // Missed events: every view re-reads.
                    Err(_) => Step::Send(sse_event(RequestEventKind::Resync, None)),
                    Ok(event) if visible(&state, &principal, &event).await => {
                        Step::Send(sse_event(event.kind, event.request_id.as_deref()))
                    }
                    Ok(_) => Step::Skip,
                }
            }
        })
        .take_while(|step| std::future::ready(!matches!(step, Step::End)))
        .filter_map(|step| {
            std::future::ready(match step {
                Step::Send(e) => Some(e),
                _ => None,
            })
        })
        .chain(futures::stream::once(std::future::ready(
            Event::default().event("signed_out").data("{}"),
        )));
    let mut stopping = state.stopping.clone();
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    Sse::new(stream.take_until(stop).map(Ok)).keep_alive(KeepAlive::default())
}

/// The trust levels, for forms.
pub fn trust_levels() -> Vec<&'static str> {
    TrustLevel::ALL.iter().map(|t| t.as_str()).collect()
}
