//! Approval requests on SQLite: creation, decisions, escalation, expiry, grants and the
//! audit trail, the part of the contract that is not one of the smaller stores.
use super::*;
use crate::sql;

#[async_trait]
impl Backend for SqliteStore {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    /// One process owns a SQLite store, so it wakes its own waiters.
    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        None
    }

    // ----- approval requests -----

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %new.request.tenant_id))]
    async fn create_request(
        &self,
        new: NewRequest,
        reviewers: ReviewerPlan,
        actor: Actor,
    ) -> Result<ApprovalRequest> {
        self.write(move |c| {
            insert_request_with_plan(c, &new, &reviewers, &actor)?;
            Ok(new.request)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn idempotent_answer(
        &self,
        tenant_id: &str,
        owner: &str,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<countersign_core::idempotency::StoredAnswer>> {
        SqliteStore::idempotent_answer(self, tenant_id, owner, key_hash, now).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn remember_answer(
        &self,
        answer: countersign_core::idempotency::StoredAnswer,
    ) -> Result<()> {
        SqliteStore::remember_answer(self, answer).await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn forget_expired_answers(&self, now: DateTime<Utc>) -> Result<u64> {
        SqliteStore::forget_expired_answers(self, now).await
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
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_requests WHERE {column} = ?1 AND tenant_id = ?2",
                rows::REQUEST_COLUMNS
            ))?
            .query_row([value.as_str(), tenant_id], rows::request)
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn find_pending_tool_call(
        &self,
        tenant_id: &str,
        call: &SameCall<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<ApprovalRequest>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_requests WHERE tenant_id = ?1 AND kind = 'tool' AND status = 'pending' \
                 AND agent_id = ?2 AND session_id = ?3 AND tool_name = ?4 AND context_sha256 = ?5 AND expires_at > ?6 \
                 AND COALESCE(mcp_server, '') = ?7",
                rows::REQUEST_COLUMNS
            ))?
            .query_row(
                params![
                    tenant_id,
                    call.agent_id,
                    call.session_id,
                    call.tool_name,
                    call.arguments_sha256,
                    ms(now),
                    call.mcp_server.unwrap_or_default()
                ],
                rows::request,
            )
            .optional()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id, user_id = %user_id))]
    async fn reviewer_since(
        &self,
        approval_id: &str,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            c.prepare_cached(sql::REVIEWER_SINCE)?
                .query_row([approval_id, user_id], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|t| t.map(countersign_core::clock::from_millis))
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(approval_id = %approval_id))]
    async fn list_decisions(&self, approval_id: &str) -> Result<Vec<DecisionRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM approval_decisions WHERE approval_id = ?1 ORDER BY decided_at, reviewer_id",
                rows::DECISION_COLUMNS
            ))?
            .query_map([approval_id], rows::decision)?
            .collect()
        })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn cancel_request(
        &self,
        tenant_id: &str,
        id: &str,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE approval_requests SET status = 'cancelled', decided_at = ?3, decided_by = ?4 \
                     WHERE tenant_id = ?1 AND id = ?2 AND status = 'pending' AND expires_at > ?3",
                )
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at), actor.id]))
                .map_err(db_error)?;
            let request = request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))?;
            if changed == 0 {
                return Err(Error::AlreadyDecided {
                    status: request.status_at(at),
                });
            }
            append_audit(
                c,
                audit_records::request_cancelled(&tenant_id, &id, &actor, at),
            )?;
            oidc::enqueue_outbox(c, &id, "cancelled", at)?;
            Ok(request)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn escalate_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ApprovalRequest>> {
        self.write(move |c| {
            let due = c
                .prepare_cached(&format!(
                    "SELECT {} FROM approval_requests WHERE status = 'pending' AND next_escalation_at <= ?1 \
                     AND expires_at > ?1 ORDER BY next_escalation_at LIMIT ?2",
                    rows::REQUEST_COLUMNS
                ))
                .and_then(|mut s| {
                    s.query_map(params![ms(now), limit], rows::request)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            let mut escalated = Vec::with_capacity(due.len());
            for mut request in due {
                let from = request.rules.escalation_level;
                let to = request.rules.level_at(now);
                request.rules.escalation_level = to;
                let next = request.rules.next_escalation_at().map(ms);
                c.prepare_cached(
                    sql::SET_ESCALATION,
                )
                .and_then(|mut s| s.execute(params![request.id, to, next]))
                .map_err(db_error)?;
                for (level, step) in request
                    .rules
                    .escalation_plan
                    .iter()
                    .enumerate()
                    .take(to as usize)
                    .skip(from as usize)
                {
                    append_audit(c, audit_records::escalation(&request, level as u32 + 1, step, now))?;
                }
                let levels = json!({"from_level": from, "to_level": to});
                notify::enqueue_notification(c, &request.id, "escalated", Some(&levels), now)?;
                escalated.push(request);
            }
            Ok(escalated)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_requests(
        &self,
        tenant_id: &str,
        filter: &RequestFilter,
    ) -> Result<Page<ApprovalRequest>> {
        let (sql, args) = crate::listing::requests(rows::REQUEST_COLUMNS, tenant_id, filter, |n| {
            format!("?{n}")
        });
        let args: Vec<rusqlite::types::Value> = args
            .into_iter()
            .map(|a| match a {
                Arg::Text(t) => rusqlite::types::Value::Text(t),
                Arg::Int(i) => rusqlite::types::Value::Integer(i),
            })
            .collect();
        let limit = filter.limit.clamp(1, 500) as usize;
        let mut items = self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args.iter()), rows::request)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id, id = %id))]
    async fn decide(
        &self,
        tenant_id: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalRequest> {
        let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
        self.write(move |c| {
            let current =
                request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))?;
            if current.status_at(decision.at) != ApprovalStatus::Pending {
                return Err(Error::AlreadyDecided {
                    status: current.status_at(decision.at),
                });
            }
            c.prepare_cached(sql::INSERT_DECISION)
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        tenant_id,
                        decision.actor.id,
                        decision.reviewer,
                        decision.verdict.as_str(),
                        decision.comment,
                        decision.channel,
                        ms(decision.at),
                    ])
                })
                .map_err(|e| match db_error(e) {
                    Error::AlreadyExists(_) => already_voted(),
                    other => other,
                })?;
            let approvals: u32 = c
                .prepare_cached(sql::COUNT_APPROVALS)
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)))
                .map_err(db_error)?;
            let outcome = quorum_outcome(&current, decision.verdict, approvals);
            if let Some(status) = outcome {
                let changed = c
                    .prepare_cached(sql::SETTLE_REQUEST)
                    .and_then(|mut s| {
                        s.execute(params![
                            tenant_id,
                            id,
                            status.as_str(),
                            ms(decision.at),
                            decision.actor.id,
                            decision.comment
                        ])
                    })
                    .map_err(db_error)?;
                if changed != 1 {
                    return Err(Error::AlreadyDecided {
                        status: current.status_at(decision.at),
                    });
                }
                oidc::enqueue_outbox(c, &id, status.as_str(), decision.at)?;
            }
            append_audit(
                c,
                audit_records::decision(
                    &tenant_id,
                    &id,
                    &decision,
                    outcome,
                    approvals,
                    current.rules.required_approvals,
                ),
            )?;
            request_in_tx(c, &tenant_id, &id)?.ok_or_else(|| not_found("approval request"))
        })
        .await
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
        let (tenant_id, id, jti) = (tenant_id.to_string(), id.to_string(), jti.to_string());
        self.write(move |c| {
            let changed = c
                .prepare_cached(sql::MARK_TOKEN_ISSUED)
                .and_then(|mut s| s.execute(params![tenant_id, id, ms(at), jti]))
                .map_err(db_error)?;
            if changed == 1 {
                append_audit(
                    c,
                    audit_records::token_issued(&tenant_id, &id, &jti, &actor, at),
                )?;
            }
            Ok(changed == 1)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %ended.tenant_id))]
    async fn end_grant(&self, ended: EndedGrant, actor: Actor) -> Result<bool> {
        self.write(move |c| {
            // Records of expired grants are of no use: an expired grant is inactive anyway.
            c.prepare_cached(sql::FORGET_EXPIRED_ENDED_GRANTS)
                .and_then(|mut s| s.execute([ms(ended.at)]))
                .map_err(db_error)?;
            let inserted = c
                .prepare_cached(sql::INSERT_ENDED_GRANT)
                .and_then(|mut s| {
                    s.execute(params![
                        ended.jti,
                        ended.tenant_id,
                        ended.approval_id,
                        ended.audience,
                        ended.end.as_str(),
                        ms(ended.at),
                        ms(ended.expires_at),
                    ])
                })
                .map_err(db_error)?;
            if inserted == 1 {
                append_audit(c, audit_records::grant_ended(&ended, &actor))?;
            }
            Ok(inserted == 1)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn grant_ended(&self, jti: &str) -> Result<bool> {
        self.read(|c| {
            c.prepare_cached(sql::GRANT_ENDED)?
                .query_row([jti], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    /// Marks up to `limit` pending requests past their expiry as expired, each with its audit
    /// event.
    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn expire_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
        self.write(move |c| {
            let due = c
                .prepare_cached(&format!(
                    "SELECT {} FROM approval_requests WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                    rows::REQUEST_COLUMNS
                ))
                .and_then(|mut s| s.query_map(params![ms(now), limit], rows::request)?.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_error)?;
            let mut expired = Vec::with_capacity(due.len());
            for mut request in due {
                let status = request.timeout_status();
                let decided_by = (status == ApprovalStatus::Approved).then_some(TIMEOUT_DECIDER);
                let changed = c
                    .prepare_cached(
                        sql::TIME_OUT_REQUEST,
                    )
                    .and_then(|mut s| s.execute(params![request.id, status.as_str(), ms(request.expires_at), decided_by]))
                    .map_err(db_error)?;
                if changed == 1 {
                    request.status = status;
                    request.decided_at = Some(request.expires_at);
                    request.decided_by = decided_by.map(str::to_string);
                    append_audit(c, audit_records::timeout(&request, now))?;
                    oidc::enqueue_outbox(c, &request.id, request.status.as_str(), now)?;
                    expired.push(Expired { tenant_id: request.tenant_id.clone(), request });
                }
            }
            Ok(expired)
        })
        .await
    }

    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn agent_pending_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        up_to: u64,
    ) -> Result<u64> {
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        let count: i64 = self.read(|c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM approval_requests WHERE tenant_id = ?1 \
                 AND status = 'pending' AND agent_id = ?2 AND expires_at > ?3 LIMIT ?4)",
            )?
            .query_row(params![tenant_id, agent_id, ms(now), up_to], |r| r.get(0))
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, err(level = "warn"))]
    async fn pending_count(&self) -> Result<i64> {
        self.read(|c| c.query_row(sql::PENDING_COUNT, [], |r| r.get(0)))
    }

    // ----- audit -----

    /// Events of a tenant in chain order, after `after_seq`.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %tenant_id))]
    async fn list_audit(
        &self,
        tenant_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM audit_events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                rows::AUDIT_COLUMNS
            ))?
            .query_map(params![tenant_id, after_seq, limit], rows::audit_event)?
            .collect()
        })
    }

    /// Records an audit event that is not part of another change.
    #[tracing::instrument(skip_all, err(level = "warn"), fields(tenant_id = %record.tenant_id))]
    async fn append_audit(&self, record: AuditRecord) -> Result<ChainedEvent> {
        self.write(move |c| append_audit(c, record)).await
    }
}
