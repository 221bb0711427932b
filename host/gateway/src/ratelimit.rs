//! Token buckets, one per key: each key may make `per_second` calls a second on average,
//! with bursts of up to `burst`. The gateway keeps three sets: per tenant and per caller
//! (checked before the install is resolved, so calls naming unknown extensions are limited
//! too) and per install. Buckets live in a sharded map (one short
//! `Mutex` section per check), and idle buckets are evicted so memory stays bounded.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Default sustained rate: 50 calls a second per install.
pub const DEFAULT_RATE_PER_SECOND: f64 = 50.0;
/// Default burst: 100 calls.
pub const DEFAULT_RATE_BURST: u32 = 100;
/// Default bound on the number of buckets kept.
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;
/// Default sustained rate of one tenant, over all its installs and callers, checked before
/// the install is resolved: 500 calls a second.
pub const DEFAULT_TENANT_RATE_PER_SECOND: f64 = 500.0;
/// Default burst of one tenant: 1000 calls.
pub const DEFAULT_TENANT_RATE_BURST: u32 = 1000;
/// Default sustained rate of one caller (a tenant's user), checked before the install is
/// resolved: 200 calls a second.
pub const DEFAULT_CALLER_RATE_PER_SECOND: f64 = 200.0;
/// Default burst of one caller: 400 calls.
pub const DEFAULT_CALLER_RATE_BURST: u32 = 400;

const SHARDS: usize = 16;

/// The rate limit applied to each install.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens added per second; `0` (or less) turns the rate limit off.
    pub per_second: f64,
    /// Bucket capacity: the largest burst allowed after a quiet period (at least 1).
    pub burst: u32,
    /// Most buckets kept; beyond it, full (idle) buckets are dropped first, then the
    /// least recently used.
    pub max_buckets: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: DEFAULT_RATE_PER_SECOND,
            burst: DEFAULT_RATE_BURST,
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }
}

impl RateLimitConfig {
    /// The default limit of one tenant (checked before resolution).
    pub fn tenant_default() -> Self {
        RateLimitConfig {
            per_second: DEFAULT_TENANT_RATE_PER_SECOND,
            burst: DEFAULT_TENANT_RATE_BURST,
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }

    /// The default limit of one caller (checked before resolution).
    pub fn caller_default() -> Self {
        RateLimitConfig {
            per_second: DEFAULT_CALLER_RATE_PER_SECOND,
            burst: DEFAULT_CALLER_RATE_BURST,
            max_buckets: DEFAULT_MAX_BUCKETS,
        }
    }

    /// This limit turned off.
    pub fn off() -> Self {
        RateLimitConfig {
            per_second: 0.0,
            ..RateLimitConfig::default()
        }
    }
}

/// The bucket key of a caller: the tenant and the user, unambiguously joined.
pub fn caller_key(tenant_id: &str, user_id: &str) -> String {
    format!("{}:{tenant_id}{user_id}", tenant_id.len())
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The token buckets of all installs.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    shard_capacity: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Buckets for `config`.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimiter {
            per_second: config.per_second,
            burst: f64::from(config.burst.max(1)),
            shard_capacity: config.max_buckets.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Whether calls are limited at all.
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes a token for `key` now: `Ok` when the call may go on, otherwise `Err` with the
    /// whole seconds (at least 1) until a token is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// [`check`](Self::check) at a given instant.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if !self.is_enabled() {
            return Ok(());
        }
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The key is copied only for a new bucket.
        if let Some(bucket) = shard.get_mut(key) {
            return self.take(bucket, now);
        }
        if shard.len() >= self.shard_capacity {
            self.evict(&mut shard, now);
        }
        let bucket = shard.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.take(bucket, now)
    }

    /// Takes a token from `bucket` at `now`, or says how many whole seconds (at least 1)
    /// until one is available.
    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), u64> {
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now.max(bucket.updated);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second);
        Err(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Makes room in a full shard: drops the buckets that have refilled (they are the
    /// same as a new bucket), and if none has, the least recently used one.
    fn evict(&self, shard: &mut HashMap<String, Bucket>, now: Instant) {
        shard.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
        if shard.len() < self.shard_capacity {
            return;
        }
        let oldest = shard
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            shard.remove(&key);
        }
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_buckets: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            per_second,
            burst,
            max_buckets,
        })
    }

    #[test]
    fn burst_then_refusal_with_retry_after_then_refill() {
        let limiter = limiter(2.0, 3, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("i1", t0).unwrap();
        }
        assert_eq!(limiter.check_at("i1", t0), Err(1));
        // Another install has its own bucket.
        limiter.check_at("i2", t0).unwrap();
        // Half a second later one token is back.
        limiter
            .check_at("i1", t0 + Duration::from_millis(500))
            .unwrap();
        assert!(
            limiter
                .check_at("i1", t0 + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn retry_after_counts_whole_seconds_until_a_token() {
        let limiter = limiter(0.1, 1, 100);
        let t0 = Instant::now();
        limiter.check_at("i", t0).unwrap();
        assert_eq!(limiter.check_at("i", t0), Err(10));
        assert_eq!(limiter.check_at("i", t0 + Duration::from_secs(4)), Err(6));
    }

    #[test]
    fn zero_rate_is_off() {
        let limiter = limiter(0.0, 1, 100);
        for _ in 0..1000 {
            limiter.check("i").unwrap();
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_idle_buckets_go_first() {
        let limiter = limiter(1000.0, 1, SHARDS);
        let t0 = Instant::now();
        for i in 0..10_000 {
            limiter.check_at(&format!("i{i}"), t0).unwrap();
        }
        assert!(limiter.len() <= SHARDS, "{}", limiter.len());
        // Once evicted, an install starts with a full bucket again, never worse.
        limiter.check_at("i0", t0 + Duration::from_secs(1)).unwrap();
    }
}
