//! Capabilities: each is one module that links its interfaces into a [`Linker`] and keeps
//! its per-call state in the [`InstanceState`]. A capability is linked only when the
//! install's effective grant includes it, so an ungranted interface does not exist for the
//! guest at all.
//!
//! Lifecycle (per module):
//! * **link** — `link(&mut Linker)`: add the interface's host functions; done once per
//!   distinct [`GrantSet`] and cached with the linker;
//! * **configure** — the operator's policy and the install's grant are turned into the
//!   capability's per-install settings by the runner;
//! * **prepare** — a fresh per-call state is built into [`InstanceState`] for every call.

pub mod baseline;
pub mod context;
pub mod egress;
pub mod http;
pub mod log;
pub mod metrics;
pub mod secrets;
pub mod storage;

use std::sync::Arc;

use palisade_bundle::manifest::{Capabilities, CapabilityKey};
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::error::LoadError;
use crate::state::InstanceState;

/// The set of capabilities that are linked for an install: the key of the linker cache.
/// Fine-grained grants (namespaces, secret names, origins) live in the per-call state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GrantSet(u32);

impl GrantSet {
    /// The set linked for an effective grant.
    pub fn of(grants: &Capabilities) -> Self {
        GrantSet(grants.keys().into_iter().map(CapabilityKey::bit).sum())
    }

    /// Whether `key` is in the set.
    pub fn contains(self, key: CapabilityKey) -> bool {
        self.0 & key.bit() != 0
    }
}

/// Host-side services that capabilities call into. The runner provides them (backed by the
/// registry); the runtime itself knows no database.
#[derive(Clone, Default)]
pub struct HostServices {
    /// Key/value storage for the `storage` capability.
    pub storage: Option<Arc<dyn storage::StorageBackend>>,
    /// Sealed secrets for the `secrets` capability.
    pub secrets: Option<Arc<dyn secrets::SecretsBackend>>,
    /// Where precompiled artifacts are cached; without it every process compiles.
    pub artifacts: Option<crate::artifacts::Artifacts>,
}

/// Per-call state of the capabilities that keep one; `None` when not granted.
#[derive(Default)]
pub(crate) struct CallCapabilities {
    pub(crate) storage: Option<storage::StorageState>,
    pub(crate) secrets: Option<secrets::SecretsState>,
    pub(crate) metrics: Option<metrics::MetricsState>,
}

/// What a capability's host functions see: the call's state of that capability. It is
/// absent only when the linker and the call's grant disagree, a host bug; every capability
/// answers that the same way, with a trap naming its interface (never a guest-visible
/// error that would hide the bug).
pub(crate) struct Linked<'a, S> {
    state: Option<&'a mut S>,
    interface: &'static str,
}

impl<'a, S> Linked<'a, S> {
    /// The view of `state` for the host functions of `interface`.
    pub(crate) fn new(state: Option<&'a mut S>, interface: &'static str) -> Self {
        Linked { state, interface }
    }

    /// The call's state, or the trap for a call that has none.
    pub(crate) fn state(&mut self) -> wasmtime::Result<&mut S> {
        let interface = self.interface;
        self.state.as_deref_mut().ok_or_else(|| {
            wasmtime::Error::msg(format!(
                "{interface} is linked but the call has no state for it"
            ))
        })
    }
}

/// Builds the linker for one grant set: the baseline, `context`, and each granted capability.
pub(crate) fn build_linker(
    engine: &Engine,
    grants: GrantSet,
) -> Result<Linker<InstanceState>, LoadError> {
    let mut linker = Linker::new(engine);
    baseline::link(&mut linker).map_err(LoadError::Link)?;
    context::link(&mut linker).map_err(LoadError::Link)?;
    for key in CapabilityKey::ALL
        .into_iter()
        .filter(|key| grants.contains(*key))
    {
        let link = match key {
            CapabilityKey::Log => log::link,
            CapabilityKey::Metrics => metrics::link,
            CapabilityKey::Storage => storage::link,
            CapabilityKey::Secrets => secrets::link,
            CapabilityKey::Http => http::link,
        };
        link(&mut linker).map_err(LoadError::Link)?;
    }
    Ok(linker)
}
