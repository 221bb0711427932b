//! The per-install write rate: a token bucket per install, shared by every call on one
//! runner. A write takes one token; an install with none left gets `quota-exceeded` at
//! once (the write never waits, so it holds no database connection or write turn).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Buckets kept at most; beyond it, full (idle) buckets are dropped first, then the least
/// recently used, so memory stays bounded however many installs write.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets of the installs that write through one storage backend.
#[derive(Debug)]
pub struct WriteRate {
    per_second: u32,
    burst_tokens: u32,
    burst: f64,
    max_buckets: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl WriteRate {
    /// `per_second` writes a second per install on average, bursts of up to `burst` (at
    /// least 1); `per_second == 0` admits every write.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_capacity(per_second, burst, MAX_BUCKETS)
    }

    fn with_capacity(per_second: u32, burst: u32, max_buckets: usize) -> Self {
        WriteRate {
            per_second,
            burst_tokens: burst.max(1),
            burst: f64::from(burst.max(1)),
            max_buckets: max_buckets.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The sustained rate (0: off).
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// The largest burst.
    pub fn burst(&self) -> u32 {
        self.burst_tokens
    }

    /// Takes a token for `install_id` now; `false` when the install has none left.
    pub fn check(&self, install_id: &str) -> bool {
        self.check_at(install_id, Instant::now())
    }

    /// [`check`](Self::check) at a given instant.
    pub fn check_at(&self, install_id: &str, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(install_id) && buckets.len() >= self.max_buckets {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(install_id.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now.max(bucket.updated);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * f64::from(self.per_second)).min(self.burst)
    }

    /// Drops the buckets that have refilled (the same as absent), then, if still full, the
    /// least recently used one.
    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
        if buckets.len() >= self.max_buckets
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(key, _)| key.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_install() {
        let rate = WriteRate::new(10, 3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| rate.check_at("a", t0)));
        assert!(!rate.check_at("a", t0), "the burst is spent");
        // Another install has its own bucket.
        assert!(rate.check_at("b", t0));
        // 10 a second: one token back after 100 ms, not before.
        assert!(!rate.check_at("a", t0 + Duration::from_millis(50)));
        assert!(rate.check_at("a", t0 + Duration::from_millis(110)));
        assert!(!rate.check_at("a", t0 + Duration::from_millis(110)));
        // Never more than the burst after a long pause.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| rate.check_at("a", later)));
        assert!(!rate.check_at("a", later));
    }

    #[test]
    fn zero_turns_it_off() {
        let rate = WriteRate::new(0, 1);
        let now = Instant::now();
        assert!((0..10_000).all(|_| rate.check_at("a", now)));
    }

    #[test]
    fn buckets_stay_bounded_and_idle_ones_go_first() {
        let rate = WriteRate::with_capacity(1, 2, 2);
        let t0 = Instant::now();
        assert!(rate.check_at("busy", t0));
        assert!(rate.check_at("busy", t0));
        assert!(rate.check_at("idle", t0));
        // After 1 s `idle` has refilled and is dropped; `busy` (still short) is kept.
        let t1 = t0 + Duration::from_millis(1000);
        assert!(rate.check_at("new", t1));
        let buckets = rate.buckets.lock().unwrap();
        assert_eq!(buckets.len(), 2);
        assert!(buckets.contains_key("busy") && buckets.contains_key("new"));
    }
}
