pub mod admin;
pub mod approvals;
pub mod audit;
pub mod ciba;
pub mod guard;
pub mod meta;
