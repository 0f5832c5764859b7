//! Countersign's domain: no HTTP, no SQL. Time comes from a [`Clock`].

pub mod approval;
pub mod audit;
pub mod canonical;
pub mod clock;
pub mod dashboard;
pub mod directory;
pub mod display;
pub mod error;
pub mod grant;
pub mod guard;
pub mod idempotency;
pub mod ids;
pub mod mcp;
pub mod notify;
pub mod oidc;
pub mod payload;
pub mod policy;
pub mod principal;
pub mod risk;
pub mod routing;
pub mod secret;
pub mod toolcall;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use principal::{Principal, Role};
