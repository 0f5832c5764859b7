//! What the benchmark drivers share: starting the servers they measure.
pub mod server;
