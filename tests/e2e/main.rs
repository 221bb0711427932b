//! End-to-end tests: real registry (SQLite file + local object store; a PostgreSQL schema
//! instead of the file when `PALISADE_TEST_POSTGRES_URL` is set), real runner and gateway
//! servers on loopback sockets, real signed bundles of real guest components.

#![allow(clippy::unwrap_used, missing_docs)]

mod admin;
mod artifacts;
mod auth;
mod author;
mod cache;
mod changes;
mod conformance;
mod dev;
mod dispatchers;
mod egress;
mod engine;
mod events;
mod failures;
mod gateway_policy;
mod guest_output;
mod hostile;
mod integrity;
mod js;
mod keys;
mod metrics;
mod migrate;
mod object_store;
mod openapi;
mod process;
mod publish;
mod quotas;
mod readiness;
mod runners;
mod secrets;
mod storage;
mod streaming;
mod support;
mod telemetry;
mod tls;
mod trust;
mod tutorial;
mod ui;
mod walking_skeleton;
mod wit_versions;
