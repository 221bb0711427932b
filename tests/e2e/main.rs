//! End-to-end tests: real registry (SQLite file + local object store), real runner and
//! gateway servers on loopback sockets, real signed bundles of real guest components.

#![allow(clippy::unwrap_used, missing_docs)]

mod auth;
mod hostile;
mod integrity;
mod publish;
mod support;
mod walking_skeleton;
