//! Approval requests: creation, decisions, escalation, expiry, grants and the audit trail,
//! for both backends.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use countersign_core::approval::{
    ApprovalRequest, Decision, DecisionRecord, NewRequest, RequestRef, TIMEOUT_DECIDER,
    quorum_outcome,
};
use countersign_core::audit::{Actor, AuditRecord, ChainedEvent};
use countersign_core::grant::EndedGrant;
use countersign_core::idempotency::StoredAnswer;
use countersign_core::routing::ReviewerPlan;
use countersign_core::{Error, Result};
use countersign_proto::ApprovalStatus;
use serde_json::json;

use crate::db::{Arg, Db, Tx};
use crate::records::already_voted;
use crate::rows::answer;
use crate::sql::{AUDIT_COLUMNS, DECISION_COLUMNS, REQUEST_COLUMNS};
use crate::writes::{
    enqueue_callbacks, enqueue_notification, insert_answer, insert_request_with_plan, not_found,
    request_in,
};
use crate::{Expired, Page, RequestFilter, SameCall, audit_records, listing, rows, sql};

/// Tells other replicas that a request changed.
async fn hint_request(tx: &mut dyn Tx, id: &str) -> Result<()> {
    tx.hint(&format!("r:{id}")).await
}

/// Requests due for a sweep, claimed so that replicas sweeping at once share them out.
async fn due_requests(
    tx: &mut dyn Tx,
    condition: &str,
    order: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ApprovalRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = 'pending' AND {condition} \
         ORDER BY {order} LIMIT ?2{}",
        tx.dialect().skip_locked()
    );
    tx.all(&sql, args![now, limit], rows::request).await
}

/// Approval requests and what hangs off them.
#[async_trait]
pub trait RequestStore: Db {
    /// Stores a new request with the reviewers who may decide it and from when. For tool
    /// calls, an identical pending call (agent, session, tool, arguments, MCP server) makes this fail
    /// with `AlreadyExists`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.request.tenant_id))]
    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        write_tx!(self, |tx| {
            insert_request_with_plan(tx, &new, &reviewers, &actor).await?;
            hint_request(tx, &new.request.id).await?;
            Ok(new.request)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_request(
        &self,
        tenant_id: &str,
        by: &RequestRef,
    ) -> Result<Option<ApprovalRequest>> {
        let (column, value) = match by {
            RequestRef::AuthReqHash(h) => ("auth_req_hash", h),
            RequestRef::PublicId(id) => ("id", id),
        };
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE {column} = ?1 AND tenant_id = ?2"
        );
        self.reader()
            .await?
            .one(&sql, args![value, tenant_id], rows::request)
            .await
    }

    /// The unexpired answer remembered under a caller's idempotency key.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredAnswer>> {
        let values = args![tenant_id, owner, key_hash, now];
        let sql = sql::live_answer();
        self.reader().await?.one(&sql, values, answer).await
    }

    /// Remembers an answer that created nothing (answers that create a request travel with
    /// it, in [`NewRequest::idempotency`]). Fails with `idempotency_key_in_use` when the key
    /// already holds a live answer.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn remember_answer(&self, answer: StoredAnswer) -> Result<()> {
        write_tx!(self, |tx| { insert_answer(tx, &answer).await })
    }

    /// Deletes answers whose retention has passed; how many.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        write_tx!(self, |tx| {
            tx.exec(sql::FORGET_EXPIRED_ANSWERS, args![now]).await
        })
    }

    /// The pending, unexpired approval of an identical tool call (through the same MCP server,
    /// or neither through MCP), if any.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = ?1 AND kind = 'tool' \
             AND status = 'pending' AND agent_id = ?2 AND session_id = ?3 AND tool_name = ?4 \
             AND context_sha256 = ?5 AND expires_at > ?6 AND COALESCE(mcp_server, '') = ?7"
        );
        let values = args![
            tenant_id,
            call.agent_id,
            call.session_id,
            call.tool_name,
            call.arguments_sha256,
            now,
            call.mcp_server.unwrap_or_default(),
        ];
        self.reader().await?.one(&sql, values, rows::request).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let (sql, owned) = listing::requests(REQUEST_COLUMNS, tenant_id, filter);
        let values: Vec<Arg<'_>> = owned
            .iter()
            .map(|a| match a {
                listing::Arg::Text(t) => Arg::Text(t),
                listing::Arg::Int(i) => Arg::Int(*i),
            })
            .collect();
        let limit = filter.limit.clamp(1, 500) as usize;
        let mut items = self
            .reader()
            .await?
            .all(&sql, &values, rows::request)
            .await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    /// When this user became (or becomes) eligible to decide the request, if ever.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id, user_id = %user_id))]
    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let values = args![approval_id, user_id];
        let since = self
            .reader()
            .await?
            .scalar::<i64>(sql::REVIEWER_SINCE, values)
            .await?;
        Ok(since.map(countersign_core::clock::from_millis))
    }

    /// Records one reviewer's decision. A rejection rejects; an approval approves once
    /// `required_approvals` distinct reviewers approved. All of it is one compare-and-set on
    /// a pending, unexpired request, so of many concurrent decisions exactly one finishes
    /// the request; the losers learn the current status, and a reviewer who already decided
    /// gets `already_voted`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            // On PostgreSQL the row lock makes concurrent decisions on this request (from
            // any replica) take turns, so the quorum count and the final transition are
            // exact; SQLite's single writer does the same.
            let sql = format!(
                "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = ?1 AND id = ?2{}",
                tx.dialect().for_update()
            );
            let current = tx
                .one(&sql, args![&tenant_id, &id], rows::request)
                .await?
                .ok_or_else(|| not_found("approval request"))?;
            let pending = |r: &ApprovalRequest| r.status_at(decision.at) == ApprovalStatus::Pending;
            if !pending(&current) {
                return Err(Error::AlreadyDecided {
                    status: current.status_at(decision.at),
                });
            }
            let d = &decision;
            let values = args![
                &id,
                &tenant_id,
                &d.actor.id,
                &d.reviewer,
                d.verdict.as_str(),
                &d.comment,
                &d.channel,
                d.at,
            ];
            tx.exec(sql::INSERT_DECISION, values)
                .await
                .map_err(|e| match e {
                    Error::AlreadyExists(_) => already_voted(),
                    other => other,
                })?;
            let approvals = tx
                .scalar::<u32>(sql::COUNT_APPROVALS, args![&id])
                .await?
                .unwrap_or(0);
            let outcome = quorum_outcome(&current, d.verdict, approvals);
            if let Some(status) = outcome {
                let values = args![
                    &tenant_id,
                    &id,
                    status.as_str(),
                    d.at,
                    &d.actor.id,
                    &d.comment
                ];
                if tx.exec(sql::SETTLE_REQUEST, values).await? != 1 {
                    return Err(Error::AlreadyDecided {
                        status: current.status_at(d.at),
                    });
                }
                // One callback per subscription of the request (CIBA ping/push).
                enqueue_callbacks(tx, &id, status.as_str(), d.at).await?;
            }
            let required = current.rules.required_approvals;
            let record = audit_records::decision(&tenant_id, &id, d, outcome, approvals, required);
            tx.audit(record).await?;
            hint_request(tx, &id).await?;
            request_in(tx, &tenant_id, &id)
                .await?
                .ok_or_else(|| not_found("approval request"))
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>> {
        let sql = format!(
            "SELECT {DECISION_COLUMNS} FROM approval_decisions WHERE approval_id = ?1 \
             ORDER BY decided_at, reviewer_id"
        );
        self.reader()
            .await?
            .all(&sql, args![approval_id], rows::decision)
            .await
    }

    /// Withdraws a pending request.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        write_tx!(self, |tx| {
            let changed = tx
                .exec(
                    "UPDATE approval_requests SET status = 'cancelled', decided_at = ?3, \
                     decided_by = ?4 WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending' \
                     AND expires_at > ?3",
                    args![&tenant_id, &id, at, &actor.id],
                )
                .await?;
            let request = request_in(tx, &tenant_id, &id)
                .await?
                .ok_or_else(|| not_found("approval request"))?;
            if changed == 0 {
                return Err(Error::AlreadyDecided {
                    status: request.status_at(at),
                });
            }
            tx.audit(audit_records::request_cancelled(
                &tenant_id, &id, &actor, at,
            ))
            .await?;
            enqueue_callbacks(tx, &id, "cancelled", at).await?;
            hint_request(tx, &id).await?;
            Ok(request)
        })
    }

    /// Records escalation steps that came due (backups or further groups joining).
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>> {
        write_tx!(self, |tx| {
            let condition = "next_escalation_at <= ?1 AND expires_at > ?1";
            let due = due_requests(tx, condition, "next_escalation_at", now, limit).await?;
            let mut escalated = Vec::with_capacity(due.len());
            for mut request in due {
                let from = request.rules.escalation_level;
                let to = request.rules.level_at(now);
                request.rules.escalation_level = to;
                let next = request.rules.next_escalation_at();
                tx.exec(sql::SET_ESCALATION, args![&request.id, to, next])
                    .await?;
                let steps = request.rules.escalation_plan.iter().enumerate();
                for (level, step) in steps.take(to as usize).skip(from as usize) {
                    let level = level as u32 + 1;
                    tx.audit(audit_records::escalation(&request, level, step, now))
                        .await?;
                }
                let levels = json!({"from_level": from, "to_level": to});
                enqueue_notification(tx, &request.id, "escalated", Some(&levels), now).await?;
                hint_request(tx, &request.id).await?;
                escalated.push(request);
            }
            Ok(escalated)
        })
    }

    /// Records that the one access token of an approval was issued; false if it already was.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn mark_token_issued(
        &self,
        tenant_id: &str,
        id: &str,
        jti: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let (tenant_id, id, jti) = (tenant_id.to_owned(), id.to_owned(), jti.to_owned());
        write_tx!(self, |tx| {
            let values = args![&tenant_id, &id, at, &jti];
            let issued = tx.exec(sql::MARK_TOKEN_ISSUED, values).await? == 1;
            if issued {
                let record = audit_records::token_issued(&tenant_id, &id, &jti, &actor, at);
                tx.audit(record).await?;
            }
            Ok(issued)
        })
    }

    /// Records that a grant was consumed or revoked, with its audit event; false when it had
    /// already ended. Of concurrent calls for one `jti`, exactly one returns true.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %ended.tenant_id))]
    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool> {
        write_tx!(self, |tx| {
            // Records of expired grants are of no use: an expired grant is inactive anyway.
            tx.exec(sql::FORGET_EXPIRED_ENDED_GRANTS, args![ended.at])
                .await?;
            let e = &ended;
            let values = args![
                &e.jti,
                &e.tenant_id,
                &e.approval_id,
                &e.audience,
                e.end.as_str(),
                e.at,
                e.expires_at,
            ];
            let inserted = tx.exec(sql::INSERT_ENDED_GRANT, values).await? == 1;
            if inserted {
                tx.audit(audit_records::grant_ended(e, &actor)).await?;
            }
            Ok(inserted)
        })
    }

    /// Whether the grant with this `jti` was consumed or revoked.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn grant_ended(&self, jti: &str) -> Result<bool> {
        let found = self
            .reader()
            .await?
            .scalar::<i64>(sql::GRANT_ENDED, args![jti])
            .await?;
        Ok(found.is_some())
    }

    /// Times out up to `limit` pending requests past their expiry (expired, or approved when
    /// their policy says so), each with its audit event. Safe to run on every replica at
    /// once: each request times out exactly once.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        write_tx!(self, |tx| {
            // Rows another replica is timing out right now are skipped, not waited for; if
            // that replica dies, its transaction rolls back and the rows are claimable again.
            let due = due_requests(tx, "expires_at <= ?1", "expires_at", now, limit).await?;
            let mut expired = Vec::with_capacity(due.len());
            for mut request in due {
                let status = request.timeout_status();
                let decided_by = (status == ApprovalStatus::Approved).then_some(TIMEOUT_DECIDER);
                let values = args![&request.id, status.as_str(), request.expires_at, decided_by];
                if tx.exec(sql::TIME_OUT_REQUEST, values).await? != 1 {
                    continue;
                }
                request.status = status;
                request.decided_at = Some(request.expires_at);
                request.decided_by = decided_by.map(str::to_string);
                tx.audit(audit_records::timeout(&request, now)).await?;
                enqueue_callbacks(tx, &request.id, request.status.as_str(), now).await?;
                hint_request(tx, &request.id).await?;
                let tenant_id = request.tenant_id.clone();
                expired.push(Expired { tenant_id, request });
            }
            Ok(expired)
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn pending_count(&self) -> Result<i64> {
        let count = self
            .reader()
            .await?
            .scalar::<i64>(sql::PENDING_COUNT, &[])
            .await?;
        Ok(count.unwrap_or(0))
    }

    /// How many unexpired requests of one agent are pending, counting no further than
    /// `up_to` (enough to compare with a limit).
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64> {
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        let count = self
            .reader()
            .await?
            .scalar::<i64>(
                "SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE tenant_id = ?1 \
                 AND status = 'pending' AND agent_id = ?2 AND expires_at > ?3 LIMIT ?4) AS pending",
                args![tenant_id, agent_id, now, up_to],
            )
            .await?;
        Ok(count.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// Events of a tenant in chain order, after `after_seq`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3"
        );
        let values = args![tenant_id, after_seq, limit];
        self.reader()
            .await?
            .all(&sql, values, rows::audit_event)
            .await
    }

    /// Records an audit event that is not part of another change.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent> {
        write_tx!(self, |tx| { tx.append_audit(record).await })
    }
}

impl RequestStore for crate::sqlite::SqliteStore {}
impl RequestStore for crate::postgres::PgStore {}
