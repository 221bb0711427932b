//! A cache of byte values with a time to live, private to the install
//! (`palisade:extension/cache`, feature `cache`, granted by the manifest capability
//! `cache`).
//!
//! Values live in the memory of the runner that serves the call, so any [`get`] may miss
//! before the time to live has passed: the runner evicted the value to stay within its
//! bounds, restarted, or another runner serves the call. Keep there only what can be
//! computed or fetched again; use `storage` for what must last. The runner bounds keys
//! (256 bytes by default), values (1 MiB) and the time to live (one hour; a longer one is
//! shortened).
//!
//! ```no_run
//! use std::time::Duration;
//! use palisade_sdk::cache;
//!
//! let rates = match cache::get("rates")? {
//!     Some(bytes) => bytes,
//!     None => {
//!         let fresh = b"{\"EUR\": 1.0}".to_vec(); // fetched from upstream
//!         cache::set("rates", &fresh, Duration::from_secs(300))?;
//!         fresh
//!     }
//! };
//! # Ok::<(), cache::CacheError>(())
//! ```

use std::time::Duration;

#[cfg(not(palisade_fake_host))]
use crate::bindings::cache::palisade::extension::cache as host;
#[cfg(palisade_fake_host)]
use crate::testing::cache as host;

/// Why a value was not cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The key is empty, too long, or holds a NUL character; the text says which.
    #[error("invalid cache key: {0}")]
    InvalidKey(String),
    /// The value is larger than the runner's bound for one value.
    #[error("the value is too large to cache")]
    TooLarge,
    /// The time to live is zero.
    #[error("the time to live must be at least one millisecond")]
    InvalidTtl,
}

impl From<host::Error> for CacheError {
    fn from(error: host::Error) -> Self {
        match error {
            host::Error::InvalidKey(message) => CacheError::InvalidKey(message),
            host::Error::TooLarge => CacheError::TooLarge,
            host::Error::InvalidTtl => CacheError::InvalidTtl,
        }
    }
}

/// The value under `key`, if it is cached and its time to live has not passed.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, CacheError> {
    host::get(key).map_err(CacheError::from)
}

/// Caches `value` under `key` for `ttl` (whole milliseconds; at most the runner's bound),
/// replacing what was there.
pub fn set(key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    host::set(key, value, ttl_ms).map_err(CacheError::from)
}

/// Removes the value under `key`; removing what is not there is no error.
pub fn delete(key: &str) -> Result<(), CacheError> {
    host::delete(key).map_err(CacheError::from)
}
