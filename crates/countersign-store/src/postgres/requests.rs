//! Approval requests on PostgreSQL: creation, decisions, escalation, expiry, grants and the
//! audit trail, the part of the contract that is not one of the smaller stores.
use super::*;
use crate::sql;

#[async_trait]
impl Backend for PgStore {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.request.tenant_id))]
    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        insert_request(&mut tx, &new, &reviewers, &actor).await?;
        notify(&mut tx, &format!("r:{}", new.request.id)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(new.request)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<countersign_core::idempotency::StoredAnswer>> {
        PgStore::idempotent_answer(self, tenant_id, owner, key_hash, now).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn remember_answer(
        &self,
        answer: countersign_core::idempotency::StoredAnswer,
    ) -> Result<()> {
        PgStore::remember_answer(self, answer).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        PgStore::forget_expired_answers(self, now).await
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
        sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE {column} = $1 AND tenant_id = $2"
        ))
        .bind(value)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND kind = 'tool' AND status = 'pending' \
             AND agent_id = $2 AND session_id = $3 AND tool_name = $4 AND context_sha256 = $5 AND expires_at > $6 \
             AND COALESCE(mcp_server, '') = $7"
        ))
        .bind(tenant_id)
        .bind(call.agent_id)
        .bind(call.session_id)
        .bind(call.tool_name)
        .bind(call.arguments_sha256)
        .bind(ms(now))
        .bind(call.mcp_server.unwrap_or_default())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id, user_id = %user_id))]
    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let since: Option<i64> = sqlx::query_scalar(&sql::pg(sql::REVIEWER_SINCE))
            .bind(approval_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(since.map(countersign_core::clock::from_millis))
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>> {
        sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM approval_decisions WHERE approval_id = $1 ORDER BY decided_at, reviewer_id"
        ))
        .bind(approval_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::decision)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(&format!(
            "UPDATE approval_requests SET status = 'cancelled', decided_at = $3, decided_by = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND expires_at > $3 RETURNING {REQUEST_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(ms(at))
        .bind(&actor.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = updated else {
            let current = PgStore::request_by_id(&mut tx, tenant_id, id)
                .await?
                .ok_or_else(|| not_found("approval request"))?;
            return Err(Error::AlreadyDecided {
                status: current.status_at(at),
            });
        };
        let request = rows::request(&row)?;
        append_audit(
            &mut tx,
            audit_records::request_cancelled(tenant_id, id, &actor, at),
        )
        .await?;
        oidc::enqueue_outbox(&mut tx, id, "cancelled", at).await?;
        notify(&mut tx, &format!("r:{id}")).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(request)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>> {
        let mut tx = self.begin().await?;
        let due = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = 'pending' AND next_escalation_at <= $1 \
             AND expires_at > $1 ORDER BY next_escalation_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::request)
        .collect::<Result<Vec<_>>>()?;
        let mut escalated = Vec::with_capacity(due.len());
        for mut request in due {
            let from = request.rules.escalation_level;
            let to = request.rules.level_at(now);
            request.rules.escalation_level = to;
            sqlx::query(&sql::pg(sql::SET_ESCALATION))
                .bind(&request.id)
                .bind(to as i32)
                .bind(request.rules.next_escalation_at().map(ms))
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            for (level, step) in request
                .rules
                .escalation_plan
                .iter()
                .enumerate()
                .take(to as usize)
                .skip(from as usize)
            {
                append_audit(
                    &mut tx,
                    audit_records::escalation(&request, level as u32 + 1, step, now),
                )
                .await?;
            }
            let levels = json!({"from_level": from, "to_level": to});
            notify::enqueue_notification(&mut tx, &request.id, "escalated", Some(&levels), now)
                .await?;
            notify(&mut tx, &format!("r:{}", request.id)).await?;
            escalated.push(request);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(escalated)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let limit = filter.limit.clamp(1, 500);
        let (sql, args) =
            crate::listing::requests(REQUEST_COLUMNS, tenant_id, filter, |n| format!("${n}"));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        let mut items = query
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?
            .iter()
            .map(rows::request)
            .collect::<Result<Vec<_>>>()?;
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(Page { items, has_more })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest> {
        let mut tx = self.begin().await?;
        // The row lock makes concurrent decisions on this request (from any replica) take
        // turns, so the quorum count and the final transition are exact.
        let current = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .map(|r| rows::request(&r))
        .transpose()?
        .ok_or_else(|| not_found("approval request"))?;
        if current.status_at(decision.at) != ApprovalStatus::Pending {
            // Release the row lock now, not when the pool gets round to it: the expiry
            // sweep skips locked rows.
            tx.rollback().await.map_err(pg_error)?;
            return Err(Error::AlreadyDecided {
                status: current.status_at(decision.at),
            });
        }
        sqlx::query(&sql::pg(sql::INSERT_DECISION))
            .bind(id)
            .bind(tenant_id)
            .bind(&decision.actor.id)
            .bind(&decision.reviewer)
            .bind(decision.verdict.as_str())
            .bind(&decision.comment)
            .bind(&decision.channel)
            .bind(ms(decision.at))
            .execute(&mut *tx)
            .await
            .map_err(|e| match pg_error(e) {
                Error::AlreadyExists(_) => already_voted(),
                other => other,
            })?;
        let approvals: i64 = sqlx::query_scalar(&sql::pg(sql::COUNT_APPROVALS))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        let approvals = approvals as u32;
        let outcome = quorum_outcome(&current, decision.verdict, approvals);
        if let Some(status) = outcome {
            sqlx::query(&sql::pg(sql::SETTLE_REQUEST))
                .bind(tenant_id)
                .bind(id)
                .bind(status.as_str())
                .bind(ms(decision.at))
                .bind(&decision.actor.id)
                .bind(&decision.comment)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            // One callback per subscription of the request (CIBA ping/push).
            oidc::enqueue_outbox(&mut tx, id, status.as_str(), decision.at).await?;
        }
        append_audit(
            &mut tx,
            audit_records::decision(
                tenant_id,
                id,
                &decision,
                outcome,
                approvals,
                current.rules.required_approvals,
            ),
        )
        .await?;
        notify(&mut tx, &format!("r:{id}")).await?;
        let request = PgStore::request_by_id(&mut tx, tenant_id, id)
            .await?
            .ok_or_else(|| not_found("approval request"))?;
        tx.commit().await.map_err(pg_error)?;
        Ok(request)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn mark_token_issued(
        &self,
        tenant_id: &str,
        id: &str,
        jti: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(&sql::pg(sql::MARK_TOKEN_ISSUED))
            .bind(tenant_id)
            .bind(id)
            .bind(ms(at))
            .bind(jti)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if changed == 1 {
            append_audit(
                &mut tx,
                audit_records::token_issued(tenant_id, id, jti, &actor, at),
            )
            .await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %ended.tenant_id))]
    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Records of expired grants are of no use: an expired grant is inactive anyway.
        sqlx::query(&sql::pg(sql::FORGET_EXPIRED_ENDED_GRANTS))
            .bind(ms(ended.at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let inserted = sqlx::query(&sql::pg(sql::INSERT_ENDED_GRANT))
            .bind(&ended.jti)
            .bind(&ended.tenant_id)
            .bind(&ended.approval_id)
            .bind(&ended.audience)
            .bind(ended.end.as_str())
            .bind(ms(ended.at))
            .bind(ms(ended.expires_at))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?
            .rows_affected();
        if inserted == 1 {
            append_audit(&mut tx, audit_records::grant_ended(&ended, &actor)).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted == 1)
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn grant_ended(&self, jti: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(&sql::pg(sql::GRANT_ENDED))
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(found.is_some())
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        let mut tx = self.begin().await?;
        // Rows another replica is timing out right now are skipped, not waited for; if that
        // replica dies, its transaction rolls back and the rows are claimable again.
        let due = sqlx::query(&format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE status = 'pending' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::request)
        .collect::<Result<Vec<_>>>()?;
        let mut expired = Vec::with_capacity(due.len());
        for mut request in due {
            let status = request.timeout_status();
            let decided_by = (status == ApprovalStatus::Approved).then_some(TIMEOUT_DECIDER);
            sqlx::query(&sql::pg(sql::TIME_OUT_REQUEST))
                .bind(&request.id)
                .bind(status.as_str())
                .bind(ms(request.expires_at))
                .bind(decided_by)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            request.status = status;
            request.decided_at = Some(request.expires_at);
            request.decided_by = decided_by.map(str::to_string);
            append_audit(&mut tx, audit_records::timeout(&request, now)).await?;
            oidc::enqueue_outbox(&mut tx, &request.id, request.status.as_str(), now).await?;
            notify(&mut tx, &format!("r:{}", request.id)).await?;
            expired.push(Expired {
                tenant_id: request.tenant_id.clone(),
                request,
            });
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(expired)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE tenant_id = $1 \
             AND status = 'pending' AND agent_id = $2 AND expires_at > $3 LIMIT $4) AS pending",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(ms(now))
        .bind(i64::try_from(up_to).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn pending_count(&self) -> Result<i64> {
        sqlx::query_scalar(&sql::pg(sql::PENDING_COUNT))
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>> {
        sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .iter()
        .map(rows::audit_event)
        .collect()
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent> {
        let mut tx = self.begin().await?;
        let event = append_audit(&mut tx, record).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(event)
    }
}
