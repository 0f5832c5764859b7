//! The approval-request listing query, built from a filter.
use countersign_proto::ApprovalStatus;

use crate::RequestFilter;

/// A request's status as callers see it, in SQL, with `now` the parameter holding the time
/// in milliseconds: pending past its expiry counts as timed out. The same rule as
/// `ApprovalRequest::status_at`.
pub fn status_at_sql(now: &str) -> String {
    format!(
        "CASE WHEN status = 'pending' AND expires_at <= {now} \
         THEN (CASE WHEN default_on_timeout = 'approve' THEN 'approved' ELSE 'expired' END) ELSE status END"
    )
}

/// A bind parameter of the listing query.
pub enum Arg {
    Text(String),
    Int(i64),
}

/// The n-th parameter (from 1), as both dialects' statements are written.
fn placeholder(n: usize) -> String {
    format!("?{n}")
}

/// The listing query and its arguments. Pending requests past their expiry count as timed
/// out.
pub fn requests(columns: &str, tenant_id: &str, filter: &RequestFilter) -> (String, Vec<Arg>) {
    let now = filter.now.timestamp_millis();
    let mut args = vec![Arg::Text(tenant_id.to_string())];
    let tenant = placeholder(1);
    let mut arg = |a: Arg| {
        args.push(a);
        placeholder(args.len())
    };
    // A reviewer's queue is read from their own reviewer rows, newest first by index, so it
    // costs the same however many requests others have pending.
    let (mut sql, order) = match &filter.user_id {
        None => (
            format!("SELECT {columns} FROM approval_requests WHERE tenant_id = {tenant}"),
            "id",
        ),
        Some(user) => {
            let u = arg(Arg::Text(user.clone()));
            let n = arg(Arg::Int(now));
            let qualified = crate::sql::prefixed(columns, "approval_requests");
            (
                format!(
                    "SELECT {qualified} FROM approval_reviewers r CROSS JOIN approval_requests \
                     WHERE r.user_id = {u} AND r.since <= {n} AND approval_requests.id = r.approval_id \
                     AND approval_requests.tenant_id = {tenant}"
                ),
                "r.approval_id",
            )
        }
    };
    match filter.status {
        Some(ApprovalStatus::Pending) => {
            let p = arg(Arg::Int(now));
            sql.push_str(&format!(" AND status = 'pending' AND expires_at > {p}"));
        }
        Some(status @ (ApprovalStatus::Expired | ApprovalStatus::Approved)) => {
            let outcome = if status == ApprovalStatus::Approved {
                "approve"
            } else {
                "reject"
            };
            let p = arg(Arg::Int(now));
            sql.push_str(&format!(
                " AND (status = '{}' OR (status = 'pending' AND expires_at <= {p} AND default_on_timeout = '{outcome}'))",
                status.as_str()
            ));
        }
        Some(status) => sql.push_str(&format!(" AND status = '{}'", status.as_str())),
        None => {}
    }
    if let Some(kind) = filter.kind {
        sql.push_str(&format!(" AND kind = '{}'", kind.as_str()));
    }
    if let Some(tool) = &filter.tool_name {
        let p = arg(Arg::Text(tool.clone()));
        sql.push_str(&format!(" AND tool_name = {p}"));
    }
    if let Some(who) = &filter.decided_by {
        let p = arg(Arg::Text(who.clone()));
        let e = arg(Arg::Text(who.to_lowercase()));
        sql.push_str(&format!(
            " AND (decided_by = {p} OR decided_by IN (SELECT id FROM users WHERE tenant_id = {tenant} AND email = {e}))"
        ));
    }
    if let Some(from) = filter.created_from {
        let p = arg(Arg::Int(from.timestamp_millis()));
        sql.push_str(&format!(" AND created_at >= {p}"));
    }
    if let Some(before) = filter.created_before {
        let p = arg(Arg::Int(before.timestamp_millis()));
        sql.push_str(&format!(" AND created_at < {p}"));
    }
    if let Some(id) = &filter.before_id {
        let p = arg(Arg::Text(id.clone()));
        sql.push_str(&format!(" AND {order} < {p}"));
    }
    let p = arg(Arg::Int(i64::from(filter.limit.clamp(1, 500)) + 1));
    sql.push_str(&format!(" ORDER BY {order} DESC LIMIT {p}"));
    (sql, args)
}
