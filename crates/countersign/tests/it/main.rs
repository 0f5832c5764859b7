//! One integration-test binary: each test starts the real server on port 0 with its own
//! temporary SQLite store and drives it over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::field_reassign_with_default
)]

mod admin;
mod audit;
mod ciba;
mod cli;
mod contract;
mod dashboard;
mod decide;
mod durability;
mod errors;
mod grants;
mod guard;
mod idempotency;
mod limits;
mod logs;
mod mcp_registry;
mod meta;
mod notify_dashboard;
mod notify_dashboard_webhooks;
mod notify_email;
mod notify_push;
mod notify_slack;
mod notify_teams;
mod notify_webhooks;
mod oidc;
mod replicas;
mod stored_shapes;
mod support;
mod tokens;
