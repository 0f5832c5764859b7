//! The approval flows as the API faces use them: authenticate-free, HTTP-free orchestration of
//! the domain and the store. Handlers extract and map; this decides.
use std::time::Duration as StdDuration;

use chrono::Duration;
use countersign_core::approval::{
    self, ApprovalRequest, Decision, Face, RequestKind, RequestRef, Verdict,
};
use countersign_core::grant::{self, GrantClaims};
use countersign_core::idempotency::IdempotencyKey;
use countersign_core::routing::ReviewerPlan;
use countersign_core::{Error, Principal, Result, Role};
use countersign_proto::ciba::{AuthorizeRequest, AuthorizeResponse, TokenResponse};
use countersign_proto::{ApprovalStatus, ErrorCode};

use crate::after_commit::{Committed, announce};
use crate::idempotency::{self, Answer, Retry};
use crate::state::AppState;

/// `POST /ciba/authorize`: an agent asks a reviewer. Under an idempotency key, a retry gets
/// the first answer (see [`crate::idempotency`]).
pub async fn authorize(
    state: &AppState,
    caller: &Principal,
    input: AuthorizeRequest,
    key: Option<IdempotencyKey>,
) -> Result<Answer<AuthorizeResponse>> {
    let agent_id = caller.require_agent()?;
    let retry = Retry::for_agent(key, caller, agent_id, "POST /ciba/authorize", &input)?;
    if let Some(retry) = &retry
        && let Some(replay) = retry.earlier(state).await?
    {
        return Ok(Answer::Replayed(replay));
    }
    let now = state.clock.now();
    let mut new =
        approval::new_ciba_request(&caller.tenant_id, agent_id, &input, &state.limits, now)?;
    match state
        .store
        .get_user(&caller.tenant_id, &input.user_id)
        .await?
    {
        Some(user) if !user.disabled => {}
        _ => {
            return Err(Error::coded(
                ErrorCode::UnknownUserId,
                format!(
                    "`userId` {:?} is not an active reviewer of this tenant",
                    input.user_id
                ),
            ));
        }
    }
    crate::throttle::check_pending(state, &caller.tenant_id, agent_id).await?;
    let answer = AuthorizeResponse {
        auth_req_id: new.auth_req_id.clone().unwrap_or_default(),
        expires_in: new.request.expires_in(now),
        interval: state.settings.requests.poll_interval_secs,
    };
    if let Some(retry) = &retry {
        new.idempotency = Some(retry.remember(200, &answer, now)?);
    }
    let plan = ReviewerPlan::single(&input.user_id, now);
    let request = match state.store.create_request(new, plan, caller.actor()).await {
        Ok(request) => request,
        Err(e) if idempotency::is_key_in_use(&e) => match &retry {
            Some(retry) => return Ok(Answer::Replayed(retry.after_conflict(state).await?)),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    announce(state, Committed::Created(&request));
    Ok(Answer::Fresh(answer))
}

/// `GET /ciba/token`: the asking agent learns the outcome, waiting up to `wait` for it.
pub async fn poll(
    state: &AppState,
    caller: &Principal,
    auth_req_id: &str,
    wait: StdDuration,
    resource: Option<&str>,
) -> Result<TokenResponse> {
    let agent_id = caller.require_agent()?;
    let by = match RequestRef::parse(auth_req_id)? {
        r @ RequestRef::AuthReqHash(_) => r,
        RequestRef::PublicId(_) => return Err(Error::NotFound("no such approval request".into())),
    };
    let mut request = Face::Ciba.check(find(state, &caller.tenant_id, &by).await?)?;
    if request.agent_id != agent_id {
        return Err(Error::forbidden(
            "only the agent that asked can poll this request",
        ));
    }
    // A resource that cannot be granted is refused before any waiting.
    let audience = grant_audience(state, &request, resource).await?;
    if !wait.is_zero() && request.status_at(state.clock.now()) == ApprovalStatus::Pending {
        request = wait_for_decision(state, &caller.tenant_id, request, wait).await?;
    }
    answer_poll(state, caller, request, audience).await
}

/// Holds until the request leaves `pending`, it expires, or `wait` passes.
pub async fn wait_for_decision(
    state: &AppState,
    tenant_id: &str,
    mut request: ApprovalRequest,
    wait: StdDuration,
) -> Result<ApprovalRequest> {
    let deadline = tokio::time::Instant::now() + wait;
    let by = RequestRef::PublicId(request.id.clone());
    let mut stopping = state.stopping.clone();
    loop {
        if *stopping.borrow() {
            return Ok(request);
        }
        let subscription = state.waiters.subscribe(&request.id);
        let notified = subscription.notify.notified();
        tokio::pin!(notified);
        // Register before re-reading, so a decision between the read and the wait still wakes us.
        notified.as_mut().enable();
        request = find(state, tenant_id, &by).await?;
        let now = state.clock.now();
        if request.status_at(now) != ApprovalStatus::Pending {
            return Ok(request);
        }
        let until_expiry = (request.expires_at - now).to_std().unwrap_or_default();
        let wake_at = deadline.min(tokio::time::Instant::now() + until_expiry);
        tokio::select! {
            _ = &mut notified => {}
            _ = stopping.changed() => {}
            _ = tokio::time::sleep_until(wake_at) => {
                if wake_at >= deadline {
                    return find(state, tenant_id, &by).await;
                }
            }
        }
    }
}

async fn answer_poll(
    state: &AppState,
    caller: &Principal,
    request: ApprovalRequest,
    audience: String,
) -> Result<TokenResponse> {
    let now = state.clock.now();
    Ok(match request.status_at(now) {
        ApprovalStatus::Pending => TokenResponse::Pending,
        ApprovalStatus::Expired => TokenResponse::Expired,
        ApprovalStatus::Rejected => TokenResponse::Denied {
            reason: request.comment,
        },
        ApprovalStatus::Cancelled => TokenResponse::Denied {
            reason: Some("the request was cancelled".into()),
        },
        ApprovalStatus::Approved => match issue_grant(state, caller, &request, audience).await? {
            Some((token, expires_in)) => TokenResponse::Approved {
                access_token: Some(token),
                token_type: Some("Bearer".into()),
                expires_in: Some(expires_in),
                token_already_issued: false,
            },
            None => TokenResponse::Approved {
                access_token: None,
                token_type: None,
                expires_in: None,
                token_already_issued: true,
            },
        },
    })
}

/// The audience of a grant of `request`: the `resource` the agent named if the request's
/// policy (or else the tenant) allows it, or the tenant's URN when it named none.
pub async fn grant_audience(
    state: &AppState,
    request: &ApprovalRequest,
    resource: Option<&str>,
) -> Result<String> {
    let tenant_id = &request.tenant_id;
    if resource.is_none() {
        return Ok(grant::tenant_audience(tenant_id));
    }
    let policy_audiences = match request.tool.as_ref().and_then(|t| t.policy_id.as_deref()) {
        Some(id) => state
            .store
            .get_policy(tenant_id, id)
            .await?
            .map(|p| p.approval.audiences)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    // The tenant's settings from the guard's cache, which a change reaches at once: polls
    // that name a resource do not read the store each time.
    let config = crate::guard::config(state, tenant_id).await?;
    grant::audience(
        tenant_id,
        resource,
        &policy_audiences,
        &config.settings.grant_audiences,
    )
}

/// Signs the one access token of an approval, for `audience`; `None` if it was already
/// issued.
pub async fn issue_grant(
    state: &AppState,
    caller: &Principal,
    request: &ApprovalRequest,
    audience: String,
) -> Result<Option<(String, i64)>> {
    if request.token_issued_at.is_some() {
        return Ok(None);
    }
    let now = state.clock.now();
    let lifetime = Duration::seconds(state.settings.tokens.lifetime_secs);
    let claims = GrantClaims::for_approval(&state.issuer, request, audience, now, lifetime);
    let token = state.signer.current().sign(&claims)?;
    // The compare-and-set makes the token single-issue even under concurrent polls.
    if state
        .store
        .mark_token_issued(
            &request.tenant_id,
            &request.id,
            &claims.jti,
            caller.actor(),
            now,
        )
        .await?
    {
        metrics::counter!("countersign_tokens_issued_total").increment(1);
        Ok(Some((token, lifetime.num_seconds())))
    } else {
        Ok(None)
    }
}

/// Whether the caller may decide the request now: [`Principal::may_decide`] with what it
/// needs from the store. The service and the dashboard's buttons ask the same question.
pub async fn may_decide(
    state: &AppState,
    caller: &Principal,
    request: &ApprovalRequest,
) -> Result<()> {
    let since = match caller.person() {
        Some(user_id) => state.store.reviewer_since(&request.id, user_id).await?,
        None => None,
    };
    let admins_can_decide = match request.kind {
        RequestKind::Tool if caller.is_admin() => {
            crate::guard::config(state, &caller.tenant_id)
                .await?
                .settings
                .admins_can_decide
        }
        _ => false,
    };
    caller.may_decide(request, since, admins_can_decide, state.clock.now())
}

/// A reviewer's (or admin's) approve or reject, through `face`. Only eligible reviewers
/// decide; for a quorum, the request stays pending until enough people approved.
pub async fn decide(
    state: &AppState,
    caller: &Principal,
    face: Face,
    by: &RequestRef,
    verdict: Verdict,
    comment: Option<String>,
    channel: &str,
) -> Result<ApprovalRequest> {
    caller.require_reviewer_or_admin()?;
    let request = face.check(find(state, &caller.tenant_id, by).await?)?;
    let now = state.clock.now();
    may_decide(state, caller, &request).await?;
    caller.may_vote(&request, verdict)?;
    // People are shown by their email; an admin key by its id.
    let reviewer = match caller.person() {
        Some(user_id) => state
            .store
            .get_user(&caller.tenant_id, user_id)
            .await?
            .map(|u| u.email)
            .unwrap_or_else(|| user_id.to_string()),
        None => format!("admin ({})", caller.key_id),
    };
    let decision = Decision::new(verdict, caller.actor(), comment, now, &state.limits)?
        .with_reviewer(reviewer)
        .with_channel(channel);
    let decided = state
        .store
        .decide(&caller.tenant_id, &request.id, decision)
        .await?;
    announce(state, Committed::Decided(&decided, verdict));
    Ok(decided)
}

/// A request the caller may see through `face`, by its public id (the one rule:
/// `Principal::may_see`); for everyone else it does not exist.
pub async fn visible(
    state: &AppState,
    caller: &Principal,
    face: Face,
    id: &str,
) -> Result<ApprovalRequest> {
    let request = face.check(find(state, &caller.tenant_id, &public_ref(id)?).await?)?;
    let since = match &caller.role {
        Role::Reviewer { user_id } => state.store.reviewer_since(&request.id, user_id).await?,
        _ => None,
    };
    caller.may_see(face, &request.agent_id, since, state.clock.now())?;
    Ok(request)
}

/// An approval's public id as a reference; anything else names no request.
pub fn public_ref(id: &str) -> Result<RequestRef> {
    if countersign_core::ids::is_id(id, countersign_core::ids::APPROVAL) {
        Ok(RequestRef::PublicId(id.to_string()))
    } else {
        Err(Error::NotFound("no such approval request".into()))
    }
}

pub async fn find(state: &AppState, tenant_id: &str, by: &RequestRef) -> Result<ApprovalRequest> {
    state
        .store
        .find_request(tenant_id, by)
        .await?
        .ok_or_else(|| Error::NotFound("no such approval request".into()))
}
