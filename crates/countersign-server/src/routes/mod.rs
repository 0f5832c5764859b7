pub mod admin;
pub mod approvals;
pub mod audit;
pub mod ciba;
pub mod guard;
pub mod meta;
pub mod oidc;
pub mod oidc_admin;
