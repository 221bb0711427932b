//! Frozen releases of `palisade:extension`, linked beside the newest so that a component
//! built against an older version keeps running unmodified (`docs/wit.md#versions`).
//!
//! A release's interfaces are served by the current implementations: each host function
//! here converts its arguments to the current types, calls the current function and
//! converts the answer back. Types that did not change are converted field by field, so a
//! change to a current type that an old release cannot express fails to compile here
//! instead of reaching an old guest. A release is linked for exactly the capabilities it
//! had, under the same grant as the current version.
//!
//! `0.1.0` differs from `0.2.0` only in `context`: its `invocation` has no `user`.

use palisade_bundle::manifest::CapabilityKey;
use wasmtime::component::Linker;

use super::Linked;
use super::cache::{Cache, CacheState};
use super::context::{ContextCapability, ContextState};
use super::log::{Log, SharedLog};
use super::metrics::{Metrics, MetricsState};
use super::secrets::{Secrets, SecretsState};
use super::storage::{Storage, StorageState};
use crate::bindings::current;
use crate::bindings::v0_1_0 as v1;
use crate::state::InstanceState;

/// Links the old releases' `context`, which every call gets.
pub(crate) fn link_context(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    v1::context::add_to_linker::<_, ContextCapability>(linker, |s| &mut s.context)
}

/// Links the old releases' interfaces of capability `key`, for an install granted it.
pub(crate) fn link(linker: &mut Linker<InstanceState>, key: CapabilityKey) -> wasmtime::Result<()> {
    match key {
        CapabilityKey::Log => v1::log::add_to_linker::<_, Log>(linker, |s| s.caps.linked::<Log>()),
        CapabilityKey::Metrics => {
            v1::metrics::add_to_linker::<_, Metrics>(linker, |s| s.caps.linked::<Metrics>())
        }
        CapabilityKey::Storage => {
            v1::storage::add_to_linker::<_, Storage>(linker, |s| s.caps.linked::<Storage>())
        }
        CapabilityKey::Secrets => {
            v1::secrets::add_to_linker::<_, Secrets>(linker, |s| s.caps.linked::<Secrets>())
        }
        CapabilityKey::Cache => {
            v1::cache::add_to_linker::<_, Cache>(linker, |s| s.caps.linked::<Cache>())
        }
        // `wasi:http/outgoing-handler` is WASI's, linked once whatever the release. A
        // capability added after a release is matched here as `Ok(())`.
        CapabilityKey::Http => Ok(()),
    }
}

// --- context -------------------------------------------------------------------------

impl v1::context::Host for ContextState {
    fn get(&mut self) -> wasmtime::Result<v1::context::Invocation> {
        let current::context::Invocation {
            request_id,
            tenant_id,
            extension_id,
            install_id,
            version_id,
            version,
            content_hash,
            trigger,
            user: _,
        } = current::context::Host::get(self)?;
        Ok(v1::context::Invocation {
            request_id,
            tenant_id,
            extension_id,
            install_id,
            version_id,
            version,
            content_hash,
            trigger,
        })
    }

    fn config(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        current::context::Host::config(self)
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        current::context::Host::config_get(self, key)
    }
}

// --- log -----------------------------------------------------------------------------

impl v1::log::Host for Linked<'_, SharedLog> {
    fn write(
        &mut self,
        level: v1::log::Level,
        message: String,
        fields: Vec<v1::log::Field>,
    ) -> wasmtime::Result<()> {
        use current::log::Level as L;
        let level = match level {
            v1::log::Level::Trace => L::Trace,
            v1::log::Level::Debug => L::Debug,
            v1::log::Level::Info => L::Info,
            v1::log::Level::Warn => L::Warn,
            v1::log::Level::Error => L::Error,
        };
        let fields = fields
            .into_iter()
            .map(|v1::log::Field { key, value }| current::log::Field { key, value })
            .collect();
        current::log::Host::write(self, level, message, fields)
    }
}

// --- storage -------------------------------------------------------------------------

impl From<v1::storage::Condition> for current::storage::Condition {
    fn from(condition: v1::storage::Condition) -> Self {
        match condition {
            v1::storage::Condition::Any => Self::Any,
            v1::storage::Condition::MustNotExist => Self::MustNotExist,
            v1::storage::Condition::MustEqualRevision(r) => Self::MustEqualRevision(r),
        }
    }
}

impl From<current::storage::Entry> for v1::storage::Entry {
    fn from(entry: current::storage::Entry) -> Self {
        let current::storage::Entry {
            key,
            value,
            revision,
        } = entry;
        Self {
            key,
            value,
            revision,
        }
    }
}

impl From<current::storage::Page> for v1::storage::Page {
    fn from(page: current::storage::Page) -> Self {
        Self {
            entries: page.entries.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

impl From<current::storage::Error> for v1::storage::Error {
    fn from(error: current::storage::Error) -> Self {
        use current::storage::Error as E;
        match error {
            E::AccessDenied => Self::AccessDenied,
            E::Conflict(revision) => Self::Conflict(revision),
            E::TooLarge => Self::TooLarge,
            E::QuotaExceeded => Self::QuotaExceeded,
            E::InvalidArgument(reason) => Self::InvalidArgument(reason),
            E::Unavailable => Self::Unavailable,
        }
    }
}

impl v1::storage::Host for Linked<'_, StorageState> {
    async fn get(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<v1::storage::Entry>, v1::storage::Error>> {
        let answer = current::storage::Host::get(self, namespace, key).await?;
        Ok(answer
            .map(|entry| entry.map(Into::into))
            .map_err(Into::into))
    }

    async fn set(
        &mut self,
        namespace: String,
        key: String,
        value: Vec<u8>,
        condition: v1::storage::Condition,
    ) -> wasmtime::Result<Result<u64, v1::storage::Error>> {
        let answer =
            current::storage::Host::set(self, namespace, key, value, condition.into()).await?;
        Ok(answer.map_err(Into::into))
    }

    async fn delete(
        &mut self,
        namespace: String,
        key: String,
        condition: v1::storage::Condition,
    ) -> wasmtime::Result<Result<bool, v1::storage::Error>> {
        let answer = current::storage::Host::delete(self, namespace, key, condition.into()).await?;
        Ok(answer.map_err(Into::into))
    }

    async fn list_entries(
        &mut self,
        namespace: String,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<v1::storage::Page, v1::storage::Error>> {
        let answer =
            current::storage::Host::list_entries(self, namespace, prefix, cursor, limit).await?;
        Ok(answer.map(Into::into).map_err(Into::into))
    }
}

// --- secrets -------------------------------------------------------------------------

impl From<current::secrets::Error> for v1::secrets::Error {
    fn from(error: current::secrets::Error) -> Self {
        use current::secrets::Error as E;
        match error {
            E::NotGranted => Self::NotGranted,
            E::NotFound => Self::NotFound,
            E::Unavailable => Self::Unavailable,
        }
    }
}

impl v1::secrets::Host for Linked<'_, SecretsState> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, v1::secrets::Error>> {
        let answer = current::secrets::Host::get(self, name).await?;
        Ok(answer.map_err(Into::into))
    }
}

// --- metrics -------------------------------------------------------------------------

impl From<current::metrics::Error> for v1::metrics::Error {
    fn from(error: current::metrics::Error) -> Self {
        use current::metrics::Error as E;
        match error {
            E::InvalidName(reason) => Self::InvalidName(reason),
            E::InvalidLabel(reason) => Self::InvalidLabel(reason),
            E::TooManySeries => Self::TooManySeries,
            E::KindMismatch => Self::KindMismatch,
        }
    }
}

fn labels(labels: Vec<v1::metrics::Label>) -> Vec<current::metrics::Label> {
    labels
        .into_iter()
        .map(|v1::metrics::Label { name, value }| current::metrics::Label { name, value })
        .collect()
}

impl v1::metrics::Host for Linked<'_, MetricsState> {
    fn counter_add(
        &mut self,
        name: String,
        labels_: Vec<v1::metrics::Label>,
        value: u64,
    ) -> wasmtime::Result<Result<(), v1::metrics::Error>> {
        let answer = current::metrics::Host::counter_add(self, name, labels(labels_), value)?;
        Ok(answer.map_err(Into::into))
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels_: Vec<v1::metrics::Label>,
        value: f64,
    ) -> wasmtime::Result<Result<(), v1::metrics::Error>> {
        let answer = current::metrics::Host::gauge_set(self, name, labels(labels_), value)?;
        Ok(answer.map_err(Into::into))
    }

    fn histogram_observe(
        &mut self,
        name: String,
        labels_: Vec<v1::metrics::Label>,
        value: f64,
    ) -> wasmtime::Result<Result<(), v1::metrics::Error>> {
        let answer = current::metrics::Host::histogram_observe(self, name, labels(labels_), value)?;
        Ok(answer.map_err(Into::into))
    }
}

// --- cache ---------------------------------------------------------------------------

impl From<current::cache::Error> for v1::cache::Error {
    fn from(error: current::cache::Error) -> Self {
        use current::cache::Error as E;
        match error {
            E::InvalidKey(reason) => Self::InvalidKey(reason),
            E::TooLarge => Self::TooLarge,
            E::InvalidTtl => Self::InvalidTtl,
        }
    }
}

impl v1::cache::Host for Linked<'_, CacheState> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, v1::cache::Error>> {
        Ok(current::cache::Host::get(self, key)?.map_err(Into::into))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), v1::cache::Error>> {
        Ok(current::cache::Host::set(self, key, value, ttl_ms)?.map_err(Into::into))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), v1::cache::Error>> {
        Ok(current::cache::Host::delete(self, key)?.map_err(Into::into))
    }
}
