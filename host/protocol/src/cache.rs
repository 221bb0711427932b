//! A bounded map whose entries expire, split into shards: the caches on the path of every
//! call (the gateway's verified caller tokens and resolved installs, the service tokens the
//! gateway mints and the runner verifies, the runner's installs).
//!
//! Each shard is a `HashMap` behind its own `RwLock`. A hit — the common case — takes one
//! shard's read lock, which readers share without waiting for each other, and clones the
//! value out (values are `Arc`s or small); calls for different keys mostly fall on
//! different shards. Only a miss takes a write lock, to insert. A lock-free map would spare
//! even the shared read-lock counter, but needs an epoch-reclamation dependency for a
//! section that is a hash lookup long; this is the read-mostly shape at a fraction of the
//! code.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

/// Most shards of a cache (a cache smaller than this has one shard per entry).
const SHARDS: usize = 32;

struct Entry<V> {
    value: V,
    expires: Instant,
}

struct Shard<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Bumped by every invalidation in the shard (see [`Ticket`]).
    generation: u64,
}

/// The state of a key's shard before its value was loaded. An insert made with it is
/// skipped when the shard saw an invalidation since, so a load that raced with a change
/// never stores what it read before the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    shard: usize,
    generation: u64,
}

/// A bounded map of entries that expire.
pub struct TtlCache<K, V> {
    hasher: RandomState,
    shard_capacity: usize,
    shards: Vec<RwLock<Shard<K, V>>>,
}

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("shards", &self.shards.len())
            .field("shard_capacity", &self.shard_capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> TtlCache<K, V> {
    /// How many entries are kept (expired ones included until they are replaced).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries (at least one): 32 shards, or one per entry
    /// when it holds fewer, each taking the same share (`capacity` rounded down to a
    /// multiple of the shard count).
    pub fn new(capacity: usize) -> Self {
        let shards = capacity.clamp(1, SHARDS);
        TtlCache {
            hasher: RandomState::new(),
            shard_capacity: (capacity / shards).max(1),
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        entries: HashMap::new(),
                        generation: 0,
                    })
                })
                .collect(),
        }
    }

    fn index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // `K: Borrow<Q>` hashes `K` and `Q` alike, so a key finds its shard either way.
        let shards = self.shards.len() as u64;
        usize::try_from(self.hasher.hash_one(key) % shards).unwrap_or(0)
    }

    /// The value of `key`, unless it is missing or has expired by `now`.
    pub fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shards[self.index(key)]
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .entries
            .get(key)
            .filter(|entry| now < entry.expires)
            .map(|entry| entry.value.clone())
    }

    /// Taken before loading the value of `key`, for [`Self::insert_since`].
    pub fn ticket<Q>(&self, key: &Q) -> Ticket
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.index(key);
        let generation = self.shards[shard]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation;
        Ticket { shard, generation }
    }

    /// Stores `value` for `key` until `expires`. A full shard first drops the entries
    /// expired by `now`, then, if still full, the one closest to expiry.
    pub fn insert(&self, key: K, value: V, expires: Instant, now: Instant) {
        self.store(key, value, expires, now, None);
    }

    /// Stores `value` for `key` until `expires`, as [`Self::insert`] does, unless the key's
    /// shard was invalidated since `ticket` was taken. Returns whether it was stored.
    pub fn insert_since(
        &self,
        ticket: Ticket,
        key: K,
        value: V,
        expires: Instant,
        now: Instant,
    ) -> bool {
        self.store(key, value, expires, now, Some(ticket))
    }

    fn store(
        &self,
        key: K,
        value: V,
        expires: Instant,
        now: Instant,
        ticket: Option<Ticket>,
    ) -> bool {
        let index = self.index(&key);
        let mut shard = self.shards[index]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if ticket.is_some_and(|t| t.shard != index || t.generation != shard.generation) {
            return false;
        }
        if shard.entries.len() >= self.shard_capacity && !shard.entries.contains_key(&key) {
            shard.entries.retain(|_, entry| now < entry.expires);
            if shard.entries.len() >= self.shard_capacity {
                // Still full of live entries: the one closest to expiry goes.
                let soonest = shard
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    shard.entries.remove(&soonest);
                }
            }
        }
        shard.entries.insert(key, Entry { value, expires });
        true
    }

    /// Forgets every entry now, and voids every ticket taken before.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            shard.entries.clear();
            shard.generation = shard.generation.wrapping_add(1);
        }
    }

    /// Forgets `key` now, and voids the tickets taken for its shard before.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = self.shards[self.index(key)]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        shard.entries.remove(key);
        shard.generation = shard.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn entries_are_answered_until_they_expire() {
        let cache = TtlCache::new(100);
        let t0 = Instant::now();
        assert!(cache.is_empty());
        cache.insert("k".to_owned(), 1, t0 + SECOND, t0);
        assert!(!cache.is_empty());
        assert_eq!(cache.get("k", t0), Some(1));
        assert_eq!(
            cache.get("k", t0 + SECOND - Duration::from_nanos(1)),
            Some(1)
        );
        assert_eq!(cache.get("k", t0 + SECOND), None);
        assert_eq!(cache.get("other", t0), None);
        // A new value replaces the old one.
        cache.insert("k".to_owned(), 2, t0 + 2 * SECOND, t0);
        assert_eq!(cache.get("k", t0 + SECOND), Some(2));
    }

    #[test]
    fn invalidation_forgets_a_key_and_refuses_loads_that_began_before_it() {
        let cache = TtlCache::new(100);
        let t0 = Instant::now();
        cache.insert("k".to_owned(), 1, t0 + SECOND, t0);
        cache.insert("kept".to_owned(), 3, t0 + SECOND, t0);
        let ticket = cache.ticket("k");
        cache.invalidate("k");
        assert_eq!(cache.get("k", t0), None);
        assert_eq!(cache.get("kept", t0), Some(3));
        // A load that began before the invalidation is not stored...
        assert!(!cache.insert_since(ticket, "k".to_owned(), 1, t0 + SECOND, t0));
        assert_eq!(cache.get("k", t0), None);
        // ...one that began after it is.
        let ticket = cache.ticket("k");
        assert!(cache.insert_since(ticket, "k".to_owned(), 2, t0 + SECOND, t0));
        assert_eq!(cache.get("k", t0), Some(2));
    }

    #[test]
    fn size_is_bounded_and_the_soonest_to_expire_go_first() {
        let cache = TtlCache::new(SHARDS);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let expires = t0 + Duration::from_millis(i + 1);
            cache.insert(i, i, expires, t0);
            assert!(cache.len() <= SHARDS, "{}", cache.len());
        }
        // The last key inserted in each shard is always kept.
        assert_eq!(cache.get(&9_999, t0), Some(9_999));
    }

    #[test]
    fn small_and_uneven_capacities_are_never_exceeded() {
        let t0 = Instant::now();
        for capacity in [0, 1, 4, SHARDS - 1, SHARDS + 1, 3 * SHARDS + 7] {
            let cache = TtlCache::new(capacity);
            for i in 0..1_000u64 {
                cache.insert(i, i, t0 + SECOND, t0);
                assert!(
                    cache.len() <= capacity.max(1),
                    "{capacity}: {}",
                    cache.len()
                );
            }
            assert_eq!(cache.get(&999, t0), Some(999), "{capacity}");
        }
    }

    #[test]
    fn a_full_shard_drops_expired_entries_then_the_soonest_to_expire() {
        // Two entries a shard; four keys that share one.
        let cache = TtlCache::new(SHARDS * 2);
        let shard = cache.index(&0u64);
        let keys: Vec<u64> = (0..).filter(|k| cache.index(k) == shard).take(4).collect();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        cache.insert(keys[0], 0, at(10), t0);
        cache.insert(keys[1], 1, at(5), t0);
        cache.insert(keys[2], 2, at(20), t0);
        assert_eq!(cache.get(&keys[0], t0), Some(0));
        assert_eq!(cache.get(&keys[1], t0), None, "closest to expiry");
        assert_eq!(cache.get(&keys[2], t0), Some(2));
        // Once the first has expired, it makes room before the live one.
        cache.insert(keys[3], 3, at(30), at(11));
        assert_eq!(cache.get(&keys[2], at(11)), Some(2));
        assert_eq!(cache.get(&keys[3], at(11)), Some(3));
        assert_eq!(cache.len(), 2);
    }
}
