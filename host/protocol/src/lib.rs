//! The gateway → runner protocol: the `POST /v1/execute` request and response types, the
//! stable error codes both sides speak, and the short-lived Ed25519 service tokens that bind
//! a call to one tenant, extension, install and content hash.
//!
//! It also owns [`TtlCache`], the bounded, sharded map of expiring entries behind every
//! cache on a call's path — service tokens here, caller tokens and installs in the gateway,
//! installs in the runner.
//!
//! This crate links neither wasmtime nor a database, so the gateway can depend on it freely.

pub mod cache;
pub mod execute;
pub mod token;

pub use cache::{Ticket, TtlCache};
pub use execute::{
    ErrorCode, ExecuteError, ExecuteLimits, ExecuteRequest, ExecuteResponse, ExecuteStats,
    HttpRequest, InvocationContext,
};
pub use token::{ServiceKeyPair, TokenError, TokenMinter, TokenScope, TokenVerifier};
