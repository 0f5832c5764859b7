//! Countersign's HTTP server as a library: [`build`] makes an [`App`] that `main` and the
//! tests run the same way.

mod accounts;
mod after_commit;
mod app;
mod auth;
pub mod conditions;
mod directory;
mod error;
pub mod events;
mod grants;
pub mod guard;
mod idempotency;
mod mcp_gateway;
pub mod mcp_servers;
pub mod notify;
mod oidc;
mod openapi;
pub mod principals;
mod routes;
pub mod service;
pub mod settings;
mod signer;
pub mod state;
pub mod telemetry;
pub mod throttle;
mod ui;
mod views;
mod waiters;
pub mod workers;

pub use app::{App, Bootstrap, DemoSetup, RunningApp, build, build_with_clock, migrate};
pub use settings::Settings;
