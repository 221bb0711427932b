//! The Palisade gateway: the public entry for extension calls. It authenticates the caller
//! (bearer JWT → tenant), resolves the tenant's install, matches the manifest's endpoints,
//! applies the header allow-lists, the size and time limits, the rate limits and the
//! operator's quotas ([`quota`]), forwards the call to a runner over the execute protocol,
//! answers with the guest's response or a stable error, and writes the execution log. It exports its own series on `GET /metrics` ([`metrics`]).
//! It never links the WebAssembly runtime.
//!
//! Nothing on a call's path waits for the database or for a signature in the common case:
//! verified caller tokens, resolved installs and service tokens are cached, and execution
//! rows are written in batches by a background task.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod cors;
pub mod error;
pub mod execlog;
pub mod headers;
pub mod idempotency;
mod installs;
pub mod jwks;
pub mod metrics;
pub mod pool;
mod proxy;
pub mod quota;
pub mod ratelimit;
mod relay;
pub mod routing;
pub mod runner;

pub use app::{GatewayError, GatewayState, app};
pub use auth::{AuthError, Caller, CallerAuth, mint_dev_token};
pub use config::{CallerAuthConfig, GatewayConfig};
pub use error::ApiError;
pub use execlog::{ExecLogConfig, ExecLogStats};
pub use jwks::{CallerKey, CallerKeyAlgorithm};
pub use proxy::RUNNER_GRACE;

#[cfg(test)]
mod tests;
