//! The wasmtime host: one shared [`Engine`](wasmtime::Engine), the capability modules that
//! are linked into an instance only when granted, the caches of compiled components and
//! pre-instances, and [`Runtime::execute`], which runs one HTTP request in a fresh,
//! resource-limited instance.
//!
//! This crate knows nothing about databases or the network protocol between gateway and
//! runner: the runner hands it verified component bytes, the effective grants and the
//! invocation context.

pub mod artifacts;
mod bindings;
pub mod capability;
mod capture;
mod compile;
mod config;
mod engine;
mod error;
mod execute;
mod limits;
mod state;

pub use artifacts::{
    ArtifactKey, ArtifactKeyError, ArtifactSigningKey, ArtifactStore, ArtifactVerifyingKey,
    Artifacts,
};
pub use capability::log::LogLine;
pub use capability::{GrantSet, HostServices};
pub use compile::CompileStats;
pub use config::RuntimeConfig;
pub use engine::{Compiled, Prepared, Runtime};
pub use error::{ExecuteError, LoadError};
pub use execute::{
    BODY_CHUNK_BYTES, BodyEvent, CallLimits, Collected, GuestBody, GuestResponse, Invocation,
    Outcome, RequestBody, RequestBodyError, Started,
};
