//! Capabilities: each is one module, readable alone, that implements [`Capability`] and
//! follows one lifecycle:
//! * **configure** — once, when the [`Runtime`](crate::Runtime) starts: the operator's
//!   settings ([`RuntimeConfig`]) and the [`HostServices`] become the capability's
//!   runtime-wide value (a backend handle, a policy, a shared store);
//! * **prepare** — for every call whose install's effective grant includes it: the
//!   grant's fine-grained part (namespaces, secret names, origins) becomes the call's
//!   state, kept in [`CallCapabilities`], the one place of per-call capability state;
//! * **link** — once per distinct [`GrantSet`] (the linker is cached): the capability's
//!   host functions are added, reaching the call's state through [`Linked`]. An ungranted
//!   capability is never linked, so its interfaces do not exist for the guest at all.
//!
//! The capability table of the manifest crate
//! ([`CAPABILITIES`](palisade_bundle::manifest::CAPABILITIES)) names each capability,
//! its interfaces and SDK feature; the [`capabilities!`] list below binds each row to its
//! module, and nothing else lists capabilities. The WASI baseline and `context` are
//! linked for every call and are not capabilities. `docs/adding-a-capability.md` walks
//! through adding one. Older releases of the WIT package are linked beside the newest by
//! [`released`], through the same implementations.

pub mod baseline;
pub mod cache;
pub mod context;
pub mod egress;
pub mod http;
pub mod log;
pub mod metrics;
pub mod released;
pub mod secrets;
pub mod storage;

use std::sync::Arc;
use std::time::Instant;

use palisade_bundle::manifest::{Capabilities, CapabilityKey};
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::config::RuntimeConfig;
use crate::error::LoadError;
use crate::execute::Invocation;
use crate::state::InstanceState;

/// One capability's lifecycle (see the module docs). The implementing type is the
/// capability's runtime-wide value.
pub(crate) trait Capability: Sized + Send + Sync + 'static {
    /// The capability's row in the capability table.
    const KEY: CapabilityKey;

    /// What the host functions of one call see.
    type State: Send + 'static;

    /// Builds the runtime-wide value from the operator's settings and the host services.
    fn configure(runtime: &Configure<'_>) -> Self;

    /// The state of one call; `None` when the install's effective grant does not include
    /// the capability.
    fn prepare(&self, call: &Prepare<'_>) -> Option<Self::State>;

    /// Adds the capability's interfaces to `linker`, each reaching the call's state
    /// through [`CallCapabilities::linked`].
    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()>;

    /// The interface named when a host function finds no state (a host bug).
    fn interface() -> &'static str {
        Self::KEY
            .spec()
            .interfaces
            .first()
            .copied()
            .unwrap_or("a capability")
    }
}

/// What [`Capability::configure`] is given.
pub(crate) struct Configure<'a> {
    /// The operator's settings.
    pub(crate) config: &'a RuntimeConfig,
    /// The host-side services (storage, secrets) the runner provides.
    pub(crate) services: &'a HostServices,
}

/// What [`Capability::prepare`] is given: the call, and when it must be over.
pub(crate) struct Prepare<'a> {
    /// The call's identifiers and the install's effective grant.
    pub(crate) invocation: &'a Invocation,
    /// When the call's deadline passes.
    pub(crate) deadline: Instant,
    /// The call's log (see [`log::Log::call_log`]).
    pub(crate) log: &'a log::SharedLog,
}

/// Binds each row of the capability table to its module: generates the runtime-wide
/// [`Configured`] values, the per-call [`CallCapabilities`], and the linker's dispatch,
/// whose `match` on [`CapabilityKey`] is exhaustive, so a row without a module does not
/// compile.
macro_rules! capabilities {
    ($($key:ident => $field:ident: $capability:ty),* $(,)?) => {
        /// Every capability's runtime-wide value.
        pub(crate) struct Configured {
            $(pub(crate) $field: $capability,)*
        }

        impl Configured {
            /// Configures every capability.
            pub(crate) fn new(runtime: &Configure<'_>) -> Self {
                Configured {
                    $($field: <$capability as Capability>::configure(runtime),)*
                }
            }

            /// Prepares the state of every capability the call's grant includes.
            pub(crate) fn prepare(&self, call: &Prepare<'_>) -> CallCapabilities {
                CallCapabilities {
                    $($field: Capability::prepare(&self.$field, call),)*
                }
            }
        }

        /// Per-call state of each capability; `None` when not granted.
        #[derive(Default)]
        pub(crate) struct CallCapabilities {
            $(pub(crate) $field: Option<<$capability as Capability>::State>,)*
        }

        $(
            const _: () = assert!(
                matches!(<$capability as Capability>::KEY, CapabilityKey::$key),
                "a capability is bound to another capability's row",
            );

            impl Slot<$capability> for CallCapabilities {
                fn slot(&mut self) -> Option<&mut <$capability as Capability>::State> {
                    self.$field.as_mut()
                }
            }
        )*

        /// Links the capability `key`.
        fn link(linker: &mut Linker<InstanceState>, key: CapabilityKey) -> wasmtime::Result<()> {
            match key {
                $(CapabilityKey::$key => <$capability as Capability>::link(linker),)*
            }
        }
    };
}

capabilities! {
    Log => log: log::Log,
    Metrics => metrics: metrics::Metrics,
    Storage => storage: storage::Storage,
    Secrets => secrets: secrets::Secrets,
    Http => http: http::Http,
    Cache => cache: cache::Cache,
}

/// Where a capability's call state lives in [`CallCapabilities`] (generated).
pub(crate) trait Slot<C: Capability> {
    fn slot(&mut self) -> Option<&mut C::State>;
}

impl CallCapabilities {
    /// What the host functions of capability `C` see of this call.
    pub(crate) fn linked<C: Capability>(&mut self) -> Linked<'_, C::State>
    where
        Self: Slot<C>,
    {
        Linked::new(<Self as Slot<C>>::slot(self), C::interface())
    }
}

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

/// Builds the linker for one grant set: the baseline, `context`, and each granted capability,
/// each in every released version of the WIT package.
pub(crate) fn build_linker(
    engine: &Engine,
    grants: GrantSet,
) -> Result<Linker<InstanceState>, LoadError> {
    let mut linker = Linker::new(engine);
    baseline::link(&mut linker).map_err(LoadError::Link)?;
    context::link(&mut linker).map_err(LoadError::Link)?;
    released::link_context(&mut linker).map_err(LoadError::Link)?;
    for key in CapabilityKey::ALL
        .into_iter()
        .filter(|key| grants.contains(*key))
    {
        link(&mut linker, key).map_err(LoadError::Link)?;
        released::link(&mut linker, key).map_err(LoadError::Link)?;
    }
    Ok(linker)
}
