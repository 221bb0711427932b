//! The fake of `palisade:extension/secrets`: `not-granted` for a name the manifest does
//! not list (the values are not consulted), `not-found` for a listed name without a value.

pub(crate) use crate::bindings::secrets::palisade::extension::secrets::Error;

use super::{not_granted, with_state};

pub(crate) fn get(name: &str) -> Result<String, Error> {
    with_state("secrets::get", |state| {
        if state.grants.secrets.is_empty() {
            not_granted("palisade:extension/secrets", "secrets");
        }
        if !state.grants.secrets.contains(name) {
            return Err(Error::NotGranted);
        }
        state.secrets.get(name).cloned().ok_or(Error::NotFound)
    })
}
