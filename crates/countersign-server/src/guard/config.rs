//! The guard's configuration: policies, approval groups, routing rules and settings. Every
//! change drops the tenant's compiled configuration.
use countersign_core::policy::{self, Policy};
use countersign_core::routing::{self, Group, Member};
use countersign_core::{Error, Principal, Result, validate};
use countersign_proto::ErrorCode;
use countersign_proto::guard::{GroupInput, GuardSettings, PolicyInput, RoutingRules};

use super::{changed, unknown};
use crate::state::AppState;

async fn group_ids(state: &AppState, tenant_id: &str) -> Result<Vec<String>> {
    Ok(state
        .store
        .list_groups(tenant_id)
        .await?
        .into_iter()
        .map(|g| g.id)
        .collect())
}

pub async fn save_policy(
    state: &AppState,
    caller: &Principal,
    id: Option<&str>,
    input: PolicyInput,
) -> Result<Policy> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    let existing = match id {
        Some(id) => Some(
            state
                .store
                .get_policy(tenant, id)
                .await?
                .ok_or_else(|| Error::NotFound("no such policy".into()))?,
        ),
        None => None,
    };
    let groups = group_ids(state, tenant).await?;
    let now = state.clock.now();
    let created_at = existing.as_ref().map(|p| p.created_at).unwrap_or(now);
    // Checking the condition dry-runs it: bounded, but not for the request threads.
    let (tenant_id, policy_id) = (tenant.clone(), id.map(str::to_string));
    let policy = state
        .conditions
        .run(move || {
            policy::from_input(
                &tenant_id,
                policy_id.as_deref(),
                input,
                |g| groups.iter().any(|x| x == g),
                created_at,
                now,
            )
        })
        .await??;
    let saved = state
        .store
        .put_policy(policy, existing.is_none(), caller.actor())
        .await?;
    changed(state, tenant);
    Ok(saved)
}

pub async fn delete_policy(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    caller.require_admin()?;
    state
        .store
        .delete_policy(&caller.tenant_id, id, caller.actor(), state.clock.now())
        .await?;
    changed(state, &caller.tenant_id);
    Ok(())
}

pub async fn save_group(
    state: &AppState,
    caller: &Principal,
    id: Option<&str>,
    input: GroupInput,
) -> Result<Group> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    routing::validate_group(&input.name, input.escalation_minutes, input.members.len())?;
    let existing = match id {
        Some(id) => Some(
            state
                .store
                .get_group(tenant, id)
                .await?
                .ok_or_else(|| Error::NotFound("no such approval group".into()))?,
        ),
        None => None,
    };
    let group_id = match (id, &input.id) {
        (Some(path), Some(body)) if path != body => {
            return Err(Error::invalid("`id` in the body differs from the path"));
        }
        (Some(path), _) => path.to_string(),
        (None, given) => routing::group_id(given.as_deref())?,
    };
    let mut members: Vec<Member> = Vec::with_capacity(input.members.len());
    for m in &input.members {
        let email = validate::email(&m.email)?;
        let user = state
            .store
            .find_user_by_email(tenant, &email)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| {
                unknown(format!(
                    "no active user with email {email:?} in this tenant"
                ))
            })?;
        if members.iter().any(|x| x.user_id == user.id) {
            return Err(Error::invalid(format!("{email:?} is listed twice")));
        }
        members.push(Member {
            user_id: user.id,
            email,
            role: m.role,
        });
    }
    let now = state.clock.now();
    let group = Group {
        id: group_id,
        tenant_id: tenant.clone(),
        name: input.name.trim().to_string(),
        escalation_minutes: input.escalation_minutes,
        members,
        created_at: existing.as_ref().map(|g| g.created_at).unwrap_or(now),
        updated_at: now,
    };
    let saved = state
        .store
        .put_group(group, existing.is_none(), caller.actor())
        .await?;
    changed(state, tenant);
    Ok(saved)
}

/// Deletes a group unless a policy, a routing rule or a setting still refers to it.
pub async fn delete_group(state: &AppState, caller: &Principal, id: &str) -> Result<()> {
    caller.require_admin()?;
    let tenant = &caller.tenant_id;
    let in_use = |what: String| Error::Conflict {
        code: ErrorCode::InUse,
        message: format!("approval group {id:?} is still used by {what}"),
    };
    for p in state.store.list_policies(tenant).await? {
        let a = &p.approval;
        if a.approval_group_id.as_deref() == Some(id)
            || a.escalation_rules.iter().any(|r| r.escalate_to == id)
        {
            return Err(in_use(format!("policy {:?}", p.name)));
        }
    }
    let (settings, routing) = state.store.guard_settings(tenant).await?;
    if routing.routing_rules.iter().any(|r| r.approval_group == id) {
        return Err(in_use("a routing rule".into()));
    }
    if settings.default_approval_group_id.as_deref() == Some(id)
        || settings
            .trust_rules
            .iter()
            .any(|r| r.approval_group_id.as_deref() == Some(id))
    {
        return Err(in_use("the guard settings".into()));
    }
    state
        .store
        .delete_group(tenant, id, caller.actor(), state.clock.now())
        .await?;
    changed(state, tenant);
    Ok(())
}

pub async fn put_routing(
    state: &AppState,
    caller: &Principal,
    rules: RoutingRules,
) -> Result<RoutingRules> {
    caller.require_admin()?;
    let groups = group_ids(state, &caller.tenant_id).await?;
    routing::validate_rules(&rules.routing_rules, |g| groups.iter().any(|x| x == g))?;
    let (_, saved) = state
        .store
        .put_guard_settings(
            &caller.tenant_id,
            None,
            Some(rules),
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    changed(state, &caller.tenant_id);
    Ok(saved)
}

pub async fn put_settings(
    state: &AppState,
    caller: &Principal,
    settings: GuardSettings,
) -> Result<GuardSettings> {
    caller.require_admin()?;
    let groups = group_ids(state, &caller.tenant_id).await?;
    policy::validate_settings(&settings, |g| groups.iter().any(|x| x == g))?;
    let (saved, _) = state
        .store
        .put_guard_settings(
            &caller.tenant_id,
            Some(settings),
            None,
            caller.actor(),
            state.clock.now(),
        )
        .await?;
    changed(state, &caller.tenant_id);
    Ok(saved)
}
