//! One integration-test binary: each test starts the real server on port 0 with its own
//! temporary SQLite store and drives it over HTTP.

mod admin;
mod audit;
mod ciba;
mod cli;
mod errors;
mod meta;
mod support;
mod tokens;
