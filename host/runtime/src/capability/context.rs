//! `palisade:extension/context`: the invocation's identifiers and the install's non-secret
//! configuration. Always linked.

use wasmtime::component::{HasData, Linker};

use crate::bindings::current::context::{self, Invocation as WitInvocation};
use crate::execute::Invocation;
use crate::state::InstanceState;

/// Per-call state of the context interface: the invocation.
#[derive(Debug, Clone)]
pub struct ContextState {
    invocation: Invocation,
}

impl ContextState {
    /// The state of the call `invocation`.
    pub fn new(invocation: Invocation) -> Self {
        ContextState { invocation }
    }
}

pub(crate) struct ContextCapability;

impl HasData for ContextCapability {
    type Data<'a> = &'a mut ContextState;
}

/// Links `palisade:extension/context`.
pub fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    context::add_to_linker::<_, ContextCapability>(linker, |s| &mut s.context)
}

impl context::Host for ContextState {
    fn get(&mut self) -> wasmtime::Result<WitInvocation> {
        let i = &self.invocation;
        Ok(WitInvocation {
            request_id: i.request_id.clone(),
            tenant_id: i.tenant_id.clone(),
            extension_id: i.extension_id.clone(),
            install_id: i.install_id.clone(),
            version_id: i.version_id.clone(),
            version: i.version.clone(),
            content_hash: i.content_hash.clone(),
            trigger: i.trigger.clone(),
            user: i.user.clone(),
        })
    }

    fn config(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .invocation
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.invocation.config.get(&key).cloned())
    }
}
