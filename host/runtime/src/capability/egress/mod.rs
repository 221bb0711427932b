//! HTTP egress behind `wasi:http/outgoing-handler`: the operator's policy, the origin and
//! address checks, and the client that sends one request under the call's limits.
//!
//! A request leaves the host only if
//! 1. the operator's [`EgressPolicy`] does not deny it (`deny_all`, `deny_hosts`),
//! 2. its origin (scheme, host, port) is in the install's `http` allow-list,
//! 3. its host resolves to at least one address that is not special-purpose (loopback,
//!    private, link-local, CGNAT, multicast, documentation, ULA, metadata...) unless the
//!    operator's `allow_cidrs` covers it, and not in `deny_cidrs`.
//!
//! The connection goes to one of the checked addresses (no second lookup); `https`
//! verifies the certificate against the requested host name.

mod body;
mod client;
mod policy;
mod resolve;

pub use body::EgressCounters;
pub use policy::{EgressPolicy, HostPattern, HostPatternError};
pub use resolve::special_purpose;

pub(crate) use client::{Exchange, IoFuture, Timeouts, default_tls, send};
pub(crate) use policy::authorize;
