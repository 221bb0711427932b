//! The fake of `palisade:extension/cache`, with the host's default bounds (keys 256
//! bytes, values 1 MiB, 8 MiB per install with the least recently used entries evicted
//! first, times to live of at most one hour) on the [`TestHost`](super::TestHost)'s clock.

use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) use crate::bindings::cache::palisade::extension::cache::Error;

use super::{State, not_granted, with_state};

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 1024 * 1024;
const MAX_BYTES_PER_INSTALL: usize = 8 * 1024 * 1024;
const MAX_TTL: Duration = Duration::from_secs(3600);
/// What each entry is charged besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// One install's cached values.
#[derive(Default)]
pub(crate) struct Store {
    entries: BTreeMap<String, Cached>,
    bytes: usize,
    /// Grows with every use; orders entries from least to most recently used.
    uses: u64,
}

struct Cached {
    value: Vec<u8>,
    expires: Duration,
    last_used: u64,
}

impl Store {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= charged(key, old.value.len());
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, cached)| cached.last_used)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.remove(&key);
        }
    }
}

fn charged(key: &str, value_len: usize) -> usize {
    key.len() + value_len + ENTRY_OVERHEAD
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "the key is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    if key.contains('\0') {
        return Err(Error::InvalidKey("the key holds a NUL character".into()));
    }
    Ok(())
}

fn granted<R>(function: &str, f: impl FnOnce(&mut State) -> R) -> R {
    with_state(function, |state| {
        if !state.grants.cache {
            not_granted("palisade:extension/cache", "cache");
        }
        f(state)
    })
}

pub(crate) fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    granted("cache::get", |state| {
        check_key(key)?;
        let now = state.clock;
        let store = &mut state.cache;
        store.uses += 1;
        let uses = store.uses;
        match store.entries.get_mut(key) {
            Some(cached) if cached.expires > now => {
                cached.last_used = uses;
                Ok(Some(cached.value.clone()))
            }
            Some(_) => {
                store.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    })
}

pub(crate) fn set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), Error> {
    granted("cache::set", |state| {
        check_key(key)?;
        if ttl_ms == 0 {
            return Err(Error::InvalidTtl);
        }
        let charge = charged(key, value.len());
        if value.len() > MAX_VALUE_BYTES || charge > MAX_BYTES_PER_INSTALL {
            return Err(Error::TooLarge);
        }
        let expires = state
            .clock
            .saturating_add(Duration::from_millis(ttl_ms).min(MAX_TTL));
        let store = &mut state.cache;
        store.remove(key);
        while store.bytes + charge > MAX_BYTES_PER_INSTALL {
            store.evict_oldest();
        }
        store.uses += 1;
        let last_used = store.uses;
        store.entries.insert(
            key.to_owned(),
            Cached {
                value: value.to_vec(),
                expires,
                last_used,
            },
        );
        store.bytes += charge;
        Ok(())
    })
}

pub(crate) fn delete(key: &str) -> Result<(), Error> {
    granted("cache::delete", |state| {
        check_key(key)?;
        state.cache.remove(key);
        Ok(())
    })
}
