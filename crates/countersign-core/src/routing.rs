//! Who may decide a tool-call approval, and from when. Routing picks the group; the plan
//! lists every reviewer with the moment they become eligible (primaries at once, backups
//! after the group's `escalation_minutes`, escalation groups after each rule's
//! `after_minutes`), so eligibility is a lookup and escalation only has to be recorded.
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use countersign_proto::guard::{EscalationRule, MemberRole, RoutingRule};
use globset::Glob;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, ids, validate};

pub const GROUP: &str = "grp";

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub role: MemberRole,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub escalation_minutes: Option<u32>,
    pub members: Vec<Member>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A group id: given (letters, digits, `_`, `-`, up to 64) or generated.
pub fn group_id(given: Option<&str>) -> Result<String> {
    match given {
        None => Ok(ids::new_id(GROUP)),
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(id.to_string())
        }
        Some(_) => Err(Error::invalid(
            "`id` must be 1 to 64 letters, digits, '_' or '-'",
        )),
    }
}

pub fn validate_group(name: &str, escalation_minutes: Option<u32>, members: usize) -> Result<()> {
    validate::text("name", name, 200)?;
    if escalation_minutes.is_some_and(|m| m == 0 || m > 1440) {
        return Err(Error::invalid(
            "`escalation_minutes` must be between 1 and 1440",
        ));
    }
    if members == 0 {
        return Err(Error::invalid("`members` must list at least one member"));
    }
    if members > 200 {
        return Err(Error::invalid("`members` may list at most 200 members"));
    }
    Ok(())
}

/// Checks routing rules: patterns compile and risk thresholds are in range.
pub fn validate_rules(rules: &[RoutingRule], group_exists: impl Fn(&str) -> bool) -> Result<()> {
    if rules.len() > 100 {
        return Err(Error::invalid("at most 100 routing rules"));
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Some(p) = &rule.condition.tool_pattern {
            Glob::new(p).map_err(|e| {
                Error::coded(
                    countersign_proto::ErrorCode::InvalidPattern,
                    format!("routing_rules[{i}].condition.tool_pattern: {e}"),
                )
            })?;
        }
        if rule
            .condition
            .risk_score_min
            .is_some_and(|r| !(0.0..=1.0).contains(&r))
        {
            return Err(Error::invalid(format!(
                "routing_rules[{i}].condition.risk_score_min must be between 0 and 1"
            )));
        }
        if !group_exists(&rule.approval_group) {
            return Err(Error::Invalid {
                code: countersign_proto::ErrorCode::UnknownReference,
                message: format!(
                    "routing_rules[{i}]: approval group {:?} does not exist",
                    rule.approval_group
                ),
            });
        }
    }
    Ok(())
}

/// The first routing rule whose every condition holds names the group; otherwise `fallback`.
pub fn route(
    rules: &[RoutingRule],
    tool: &str,
    risk: f64,
    fallback: Option<&str>,
) -> Option<String> {
    rules
        .iter()
        .find(|rule| {
            let risk_ok = rule.condition.risk_score_min.is_none_or(|min| risk >= min);
            let tool_ok = rule
                .condition
                .tool_pattern
                .as_deref()
                .is_none_or(|p| Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(tool)));
            risk_ok && tool_ok
        })
        .map(|rule| rule.approval_group.clone())
        .or_else(|| fallback.map(str::to_string))
}

/// A step of escalation to record when its time comes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub at_ms: i64,
    /// `backups` (the routed group's backups join) or `group` (another group joins).
    pub kind: String,
    pub group_id: String,
}

/// Every eligible reviewer with the moment they may start deciding, and the escalation steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewerPlan {
    pub reviewers: Vec<(String, DateTime<Utc>)>,
    pub steps: Vec<EscalationStep>,
}

impl ReviewerPlan {
    /// A single reviewer, eligible at once (CIBA requests).
    pub fn single(user_id: &str, at: DateTime<Utc>) -> ReviewerPlan {
        ReviewerPlan {
            reviewers: vec![(user_id.to_string(), at)],
            steps: Vec::new(),
        }
    }
}

pub fn plan(
    routed: &Group,
    rules: &[EscalationRule],
    groups: &BTreeMap<String, Group>,
    created_at: DateTime<Utc>,
) -> ReviewerPlan {
    let mut since: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut grant = |user: &str, at: DateTime<Utc>| {
        let entry = since.entry(user.to_string()).or_insert(at);
        if at < *entry {
            *entry = at;
        }
    };
    let mut steps = Vec::new();
    let backups_at =
        created_at + Duration::minutes(i64::from(routed.escalation_minutes.unwrap_or(0)));
    for m in &routed.members {
        match m.role {
            MemberRole::Primary => grant(&m.user_id, created_at),
            MemberRole::Backup => grant(&m.user_id, backups_at),
        }
    }
    if routed.escalation_minutes.is_some()
        && routed.members.iter().any(|m| m.role == MemberRole::Backup)
    {
        steps.push(EscalationStep {
            at_ms: backups_at.timestamp_millis(),
            kind: "backups".into(),
            group_id: routed.id.clone(),
        });
    }
    for rule in rules {
        let at = created_at + Duration::minutes(i64::from(rule.after_minutes));
        if let Some(group) = groups.get(&rule.escalate_to) {
            for m in &group.members {
                grant(&m.user_id, at);
            }
        }
        steps.push(EscalationStep {
            at_ms: at.timestamp_millis(),
            kind: "group".into(),
            group_id: rule.escalate_to.clone(),
        });
    }
    steps.sort_by_key(|s| s.at_ms);
    ReviewerPlan {
        reviewers: since.into_iter().collect(),
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_proto::guard::RoutingCondition;

    fn group(id: &str, escalation: Option<u32>, members: &[(&str, MemberRole)]) -> Group {
        Group {
            id: id.into(),
            tenant_id: "t".into(),
            name: id.into(),
            escalation_minutes: escalation,
            members: members
                .iter()
                .map(|(u, r)| Member {
                    user_id: u.to_string(),
                    email: format!("{u}@example.com"),
                    role: *r,
                })
                .collect(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn first_matching_rule_wins_then_the_fallback() {
        let rules = vec![
            RoutingRule {
                condition: RoutingCondition {
                    risk_score_min: Some(0.8),
                    tool_pattern: None,
                },
                approval_group: "group_security".into(),
            },
            RoutingRule {
                condition: RoutingCondition {
                    risk_score_min: None,
                    tool_pattern: Some("payment_*".into()),
                },
                approval_group: "group_finance".into(),
            },
        ];
        assert_eq!(
            route(&rules, "payment_refund", 0.9, None).as_deref(),
            Some("group_security")
        );
        assert_eq!(
            route(&rules, "payment_refund", 0.5, None).as_deref(),
            Some("group_finance")
        );
        assert_eq!(
            route(&rules, "search", 0.5, Some("group_general")).as_deref(),
            Some("group_general")
        );
        assert_eq!(route(&rules, "search", 0.5, None), None);
    }

    #[test]
    fn the_plan_gives_primaries_backups_and_escalation_groups_their_times() {
        let now = Utc::now();
        let finance = group(
            "finance",
            Some(15),
            &[("alice", MemberRole::Primary), ("bob", MemberRole::Backup)],
        );
        let managers = group(
            "managers",
            None,
            &[
                ("carol", MemberRole::Primary),
                ("alice", MemberRole::Primary),
            ],
        );
        let groups: BTreeMap<String, Group> = [("managers".to_string(), managers)].into();
        let rules = vec![EscalationRule {
            after_minutes: 20,
            escalate_to: "managers".into(),
        }];
        let p = plan(&finance, &rules, &groups, now);
        let at = |u: &str| p.reviewers.iter().find(|(id, _)| id == u).map(|(_, t)| *t);
        assert_eq!(at("alice"), Some(now), "the earliest grant wins");
        assert_eq!(at("bob"), Some(now + Duration::minutes(15)));
        assert_eq!(at("carol"), Some(now + Duration::minutes(20)));
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].kind, "backups");
        assert_eq!(p.steps[1].group_id, "managers");
    }
}
