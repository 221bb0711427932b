//! The fake of `palisade:extension/context`: the invocation and configuration the
//! [`TestHost`](super::TestHost) was given.

pub(crate) use crate::bindings::context::palisade::extension::context::Invocation;

use super::with_state;

pub(crate) fn get() -> Invocation {
    with_state("context::get", |state| {
        let invocation = state.invocation.clone();
        Invocation {
            request_id: invocation.request_id,
            tenant_id: invocation.tenant_id,
            extension_id: invocation.extension_id,
            install_id: invocation.install_id,
            version_id: invocation.version_id,
            version: invocation.version,
            content_hash: invocation.content_hash,
            trigger: invocation.trigger,
            user: invocation.user,
        }
    })
}

pub(crate) fn config() -> Vec<(String, String)> {
    with_state("context::config", |state| {
        state
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    })
}

pub(crate) fn config_get(key: &str) -> Option<String> {
    with_state("context::config_get", |state| {
        state.config.get(key).cloned()
    })
}
