//! The tenant's guard settings: trust rules and their checks.
use countersign_proto::ErrorCode;
use globset::Glob;

use super::{glob, invalid};
use crate::{Error, Result};

/// The first trust rule that applies: the agent's trust level is listed, and the tool matches
/// one of its patterns or the call's scope is one of its scopes.
pub fn trust_rule<'a>(
    settings: &'a countersign_proto::guard::GuardSettings,
    trust: countersign_proto::TrustLevel,
    tool: &str,
    scope: Option<&str>,
) -> Option<&'a countersign_proto::guard::TrustRule> {
    settings.trust_rules.iter().find(|rule| {
        rule.trust_levels.contains(&trust)
            && (rule
                .tool_patterns
                .iter()
                .any(|p| Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(tool)))
                || scope.is_some_and(|s| rule.scopes.iter().any(|r| r == s)))
    })
}

/// Checks guard settings: patterns compile, groups exist, timeouts are in range.
pub fn validate_settings(
    settings: &countersign_proto::guard::GuardSettings,
    group_exists: impl Fn(&str) -> bool,
) -> Result<()> {
    if !(1..=1440).contains(&settings.default_timeout_minutes) {
        return Err(invalid(
            "`default_timeout_minutes` must be between 1 and 1440",
        ));
    }
    let unknown_group = |id: &str| Error::Invalid {
        code: ErrorCode::UnknownReference,
        message: format!("approval group {id:?} does not exist in this tenant"),
    };
    if let Some(g) = settings
        .default_approval_group_id
        .as_deref()
        .filter(|g| !group_exists(g))
    {
        return Err(unknown_group(g));
    }
    for (i, rule) in settings.trust_rules.iter().enumerate() {
        if rule.trust_levels.is_empty() || (rule.tool_patterns.is_empty() && rule.scopes.is_empty())
        {
            return Err(invalid(format!(
                "trust_rules[{i}] needs trust_levels and at least one tool pattern or scope"
            )));
        }
        for p in &rule.tool_patterns {
            glob(&format!("trust_rules[{i}].tool_patterns"), p)?;
        }
        if let Some(g) = rule
            .approval_group_id
            .as_deref()
            .filter(|g| !group_exists(g))
        {
            return Err(unknown_group(g));
        }
    }
    crate::grant::check_audiences("grant_audiences", &settings.grant_audiences)?;
    Ok(())
}
