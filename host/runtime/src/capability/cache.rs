//! `palisade:extension/cache`: byte values with a time to live, private to each install,
//! held in the runner's memory. Linked only when the install's grant includes `cache`.
//!
//! One [`CacheStore`] per runtime holds every install's entries, bounded twice by the
//! operator's [`CacheConfig`]: each install's entries by
//! [`max_bytes_per_install`](CacheConfig::max_bytes_per_install) (its least recently used
//! entries go first), and all of them by [`max_bytes`](CacheConfig::max_bytes) (entries of
//! the least recently active install go first), so one busy install cannot empty the cache
//! of the others beyond its own share. Expired entries are dropped when they are read and
//! pushed out by eviction otherwise. What the guest sees:
//! * a miss for anything absent, expired or evicted, whichever it is;
//! * an empty key, a NUL character or a key over the bound → `invalid-key`;
//! * a value over the bound → `too-large`; a time to live of zero → `invalid-ttl`;
//! * a time to live over [`max_ttl_ms`](CacheConfig::max_ttl_ms) → the bound, silently.
//!
//! The install id comes from the invocation, never from the guest.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker};

use crate::bindings::current::cache::{self, Error as WitError};
use crate::capability::{Capability, CapabilityKey, Configure, Linked, Prepare};
use crate::state::InstanceState;

/// Bytes an entry is charged beyond its key and value: the bookkeeping around it.
const ENTRY_OVERHEAD: usize = 64;

/// The operator's bounds on the cache. Every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes (keys, values and a small overhead per entry) the runner keeps for all installs
    /// together. Default 64 MiB.
    pub max_bytes: usize,
    /// Bytes one install's entries may take. Default 8 MiB.
    pub max_bytes_per_install: usize,
    /// Longest key, in UTF-8 bytes. Default 256.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Longest time to live, in milliseconds; a longer one is shortened to it.
    /// Default 3 600 000 (one hour).
    pub max_ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 64 * 1024 * 1024,
            max_bytes_per_install: 8 * 1024 * 1024,
            max_key_bytes: 256,
            max_value_bytes: 1024 * 1024,
            max_ttl_ms: 3_600_000,
        }
    }
}

/// One cached value.
#[derive(Debug)]
struct Entry {
    value: Bytes,
    expires: Instant,
    charged: usize,
}

/// One install's entries, least recently used first out.
#[derive(Debug)]
struct InstallEntries {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

impl InstallEntries {
    fn remove(&mut self, key: &str) -> usize {
        let freed = self.entries.pop(key).map_or(0, |entry| entry.charged);
        self.bytes -= freed;
        freed
    }

    fn evict_oldest(&mut self) -> usize {
        let freed = self.entries.pop_lru().map_or(0, |(_, entry)| entry.charged);
        self.bytes -= freed;
        freed
    }
}

#[derive(Debug)]
struct Entries {
    /// Installs, least recently active first out.
    installs: LruCache<String, InstallEntries>,
    bytes: usize,
}

/// Every install's cached values on this runtime.
#[derive(Debug)]
pub struct CacheStore {
    config: CacheConfig,
    entries: Mutex<Entries>,
}

impl CacheStore {
    /// An empty store within `config`'s bounds.
    pub fn new(config: CacheConfig) -> Self {
        CacheStore {
            config,
            entries: Mutex::new(Entries {
                installs: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every update leaves the entries consistent before anything can panic.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held for all installs.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn check_key(&self, key: &str) -> Result<(), WitError> {
        if key.is_empty() {
            return Err(WitError::InvalidKey("the key is empty".into()));
        }
        if key.len() > self.config.max_key_bytes {
            return Err(WitError::InvalidKey(format!(
                "the key is longer than {} bytes",
                self.config.max_key_bytes
            )));
        }
        if key.contains('\0') {
            return Err(WitError::InvalidKey("the key holds a NUL character".into()));
        }
        Ok(())
    }

    /// The value of `install`'s `key` at `now`, if cached and not expired.
    pub fn get(&self, install: &str, key: &str, now: Instant) -> Result<Option<Bytes>, WitError> {
        self.check_key(key)?;
        let mut guard = self.lock();
        let entries = &mut *guard;
        let Some(own) = entries.installs.get_mut(install) else {
            return Ok(None);
        };
        match own.entries.get(key) {
            Some(entry) if entry.expires > now => Ok(Some(entry.value.clone())),
            Some(_) => {
                entries.bytes -= own.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Caches `value` under `install`'s `key` from `now` for `ttl` (at most the bound).
    pub fn set(
        &self,
        install: &str,
        key: &str,
        value: Bytes,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), WitError> {
        self.check_key(key)?;
        if ttl.is_zero() {
            return Err(WitError::InvalidTtl);
        }
        let charged = key.len() + value.len() + ENTRY_OVERHEAD;
        if value.len() > self.config.max_value_bytes
            || charged > self.config.max_bytes_per_install
            || charged > self.config.max_bytes
        {
            return Err(WitError::TooLarge);
        }
        let ttl = ttl.min(Duration::from_millis(self.config.max_ttl_ms));
        let entry = Entry {
            value,
            expires: now + ttl,
            charged,
        };
        let mut guard = self.lock();
        let entries = &mut *guard;
        let own = entries
            .installs
            .get_or_insert_mut(install.to_owned(), || InstallEntries {
                entries: LruCache::unbounded(),
                bytes: 0,
            });
        entries.bytes -= own.remove(key);
        while own.bytes + charged > self.config.max_bytes_per_install {
            entries.bytes -= own.evict_oldest();
        }
        own.entries.put(key.to_owned(), entry);
        own.bytes += charged;
        entries.bytes += charged;
        // Over the runner's bound: the least recently active installs give way first (the
        // install just written is the most recent, so it gives way last).
        while entries.bytes > self.config.max_bytes {
            let Some(install) = entries.installs.peek_lru().map(|(id, _)| id.clone()) else {
                break;
            };
            let Some(oldest) = entries.installs.peek_mut(&install) else {
                break;
            };
            entries.bytes -= oldest.evict_oldest();
            if oldest.entries.is_empty() {
                entries.installs.pop(&install);
            }
        }
        Ok(())
    }

    /// Removes `install`'s `key`.
    pub fn delete(&self, install: &str, key: &str) -> Result<(), WitError> {
        self.check_key(key)?;
        let mut guard = self.lock();
        let entries = &mut *guard;
        if let Some(own) = entries.installs.peek_mut(install) {
            entries.bytes -= own.remove(key);
            if own.entries.is_empty() {
                entries.installs.pop(install);
            }
        }
        Ok(())
    }
}

/// The `cache` capability: the runtime's store.
#[derive(Debug)]
pub(crate) struct Cache {
    store: Arc<CacheStore>,
}

/// Per-call state of the `cache` capability.
#[derive(Debug)]
pub struct CacheState {
    store: Arc<CacheStore>,
    install_id: String,
}

impl Capability for Cache {
    const KEY: CapabilityKey = CapabilityKey::Cache;
    type State = CacheState;

    fn configure(runtime: &Configure<'_>) -> Self {
        Cache {
            store: Arc::new(CacheStore::new(runtime.config.cache)),
        }
    }

    fn prepare(&self, call: &Prepare<'_>) -> Option<CacheState> {
        call.invocation.grants.cache.then(|| CacheState {
            store: Arc::clone(&self.store),
            install_id: call.invocation.install_id.clone(),
        })
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        cache::add_to_linker::<_, Cache>(linker, |s| s.caps.linked::<Cache>())
    }
}

impl HasData for Cache {
    type Data<'a> = Linked<'a, CacheState>;
}

impl cache::Host for Linked<'_, CacheState> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let state = self.state()?;
        let found = state.store.get(&state.install_id, &key, Instant::now());
        Ok(found.map(|value| value.map(Vec::from)))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let state = self.state()?;
        let ttl = Duration::from_millis(ttl_ms);
        Ok(state.store.set(
            &state.install_id,
            &key,
            Bytes::from(value),
            ttl,
            Instant::now(),
        ))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), WitError>> {
        let state = self.state()?;
        Ok(state.store.delete(&state.install_id, &key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CacheStore {
        CacheStore::new(CacheConfig {
            max_bytes: 4 * (ENTRY_OVERHEAD + 11),
            max_bytes_per_install: 2 * (ENTRY_OVERHEAD + 11),
            max_key_bytes: 8,
            max_value_bytes: 10,
            max_ttl_ms: 1000,
        })
    }

    fn value(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    const TTL: Duration = Duration::from_millis(500);

    #[test]
    fn a_value_lives_until_its_time_to_live_passes() {
        let store = small();
        let now = Instant::now();
        store.set("i-1", "k", value("v"), TTL, now).unwrap();
        assert_eq!(store.get("i-1", "k", now).unwrap(), Some(value("v")));
        let later = now + TTL - Duration::from_millis(1);
        assert_eq!(store.get("i-1", "k", later).unwrap(), Some(value("v")));
        assert_eq!(store.get("i-1", "k", now + TTL).unwrap(), None);
        // The expired entry was dropped when read.
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn a_longer_time_to_live_is_cut_to_the_bound() {
        let store = small();
        let now = Instant::now();
        store
            .set("i-1", "k", value("v"), Duration::from_secs(3600), now)
            .unwrap();
        let bound = now + Duration::from_millis(1000);
        assert!(
            store
                .get("i-1", "k", bound - Duration::from_millis(1))
                .unwrap()
                .is_some()
        );
        assert_eq!(store.get("i-1", "k", bound).unwrap(), None);
    }

    #[test]
    fn installs_never_see_each_others_values() {
        let store = small();
        let now = Instant::now();
        store.set("i-1", "k", value("one"), TTL, now).unwrap();
        assert_eq!(store.get("i-2", "k", now).unwrap(), None);
        store.delete("i-2", "k").unwrap();
        assert_eq!(store.get("i-1", "k", now).unwrap(), Some(value("one")));
        store.delete("i-1", "k").unwrap();
        assert_eq!(store.get("i-1", "k", now).unwrap(), None);
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn bad_keys_values_and_times_are_refused_by_name() {
        let store = small();
        let now = Instant::now();
        for key in ["", "123456789", "a\0b"] {
            let err = store.set("i", key, value("v"), TTL, now).unwrap_err();
            assert!(matches!(err, WitError::InvalidKey(_)), "{key:?}: {err:?}");
            assert!(matches!(
                store.get("i", key, now),
                Err(WitError::InvalidKey(_))
            ));
        }
        let err = store
            .set("i", "k", value("12345678901"), TTL, now)
            .unwrap_err();
        assert!(matches!(err, WitError::TooLarge));
        let err = store
            .set("i", "k", value("v"), Duration::ZERO, now)
            .unwrap_err();
        assert!(matches!(err, WitError::InvalidTtl));
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn an_install_over_its_share_loses_its_least_recently_used_entries() {
        let store = small();
        let now = Instant::now();
        store.set("i", "a", value("0123456789"), TTL, now).unwrap();
        store.set("i", "b", value("0123456789"), TTL, now).unwrap();
        // Reading `a` makes `b` the least recently used.
        store.get("i", "a", now).unwrap();
        store.set("i", "c", value("0123456789"), TTL, now).unwrap();
        assert!(store.get("i", "a", now).unwrap().is_some());
        assert_eq!(store.get("i", "b", now).unwrap(), None);
        assert!(store.get("i", "c", now).unwrap().is_some());
    }

    #[test]
    fn over_the_runners_bound_the_least_recently_active_install_gives_way() {
        let store = small();
        let now = Instant::now();
        for install in ["quiet", "busy"] {
            store
                .set(install, "a", value("0123456789"), TTL, now)
                .unwrap();
            store
                .set(install, "b", value("0123456789"), TTL, now)
                .unwrap();
        }
        // Full; a third install's entry pushes out the oldest entry of `quiet`.
        store
            .set("new", "a", value("0123456789"), TTL, now)
            .unwrap();
        assert_eq!(store.get("quiet", "a", now).unwrap(), None);
        assert!(store.get("quiet", "b", now).unwrap().is_some());
        assert!(store.get("busy", "a", now).unwrap().is_some());
        assert!(store.get("busy", "b", now).unwrap().is_some());
        assert!(store.bytes() <= 4 * (ENTRY_OVERHEAD + 11));
    }

    #[test]
    fn replacing_a_value_charges_it_once() {
        let store = small();
        let now = Instant::now();
        for _ in 0..10 {
            store.set("i", "k", value("0123456789"), TTL, now).unwrap();
        }
        assert_eq!(store.bytes(), ENTRY_OVERHEAD + 11);
    }
}
