//! The gateway → runner protocol: the execute hop (plain HTTP with the call's context in
//! `x-palisade-*` headers, bodies streamed both ways, the outcome and stats in trailers),
//! the stable error codes both sides speak, and the short-lived Ed25519 service tokens that
//! bind one call to its tenant, install, content hash, method, path and request id.
//!
//! It also owns the body wrappers both ends use ([`body`]), the metrics exposition formats
//! both serve ([`exposition`]), the W3C trace context carried end to end ([`trace`]), and [`TtlCache`], the bounded, sharded map of expiring entries behind every
//! cache on a call's path — caller tokens and installs in the gateway, installs and seen
//! request ids in the runner.
//!
//! [`tls`] is the hop's TLS, both ends: the runner's listener (mutual TLS as an option) and
//! the gateway's connector, from PEM files reloaded when they change.
//!
//! This crate links neither wasmtime nor a database, so the gateway can depend on it freely.

pub mod body;
pub mod cache;
pub mod exposition;
pub mod hop;
pub mod tls;
pub mod token;
pub mod trace;

pub use cache::{Ticket, TtlCache};
pub use hop::{BodyOutcome, CallContext, ErrorBody, ErrorCode, ExecuteStats, HopError, QuotaRef};
pub use token::{InvalidToken, ServiceKeyPair, TokenError, TokenMinter, TokenScope, TokenVerifier};
pub use trace::TraceParent;
