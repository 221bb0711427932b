//! Install resolution with short-lived caches: a tenant's enabled install of an extension
//! is reused for [`GatewayConfig::install_cache_ttl`] instead of being read from the
//! registry on every call, and the fact that there is none — an unknown extension id, or
//! one the tenant has not installed — for [`GatewayConfig::unknown_extension_ttl`], in a
//! cache of its own.
//!
//! Staleness is bounded four ways: entries expire after the TTL; the gateway follows the
//! registry's change sequence and forgets the entry of every install changed anywhere
//! within a poll (500 ms); the admin API of this gateway forgets an entry as soon as it
//! changes the install; and a runner checks the
//! install the gateway names against the registry on every call, answering 404 when it was
//! disabled, removed or moved to another version — on which the gateway forgets the entry,
//! resolves again and, if the install still exists, sends the call once more (nothing ran).
//!
//! [`GatewayConfig::install_cache_ttl`]: crate::GatewayConfig::install_cache_ttl
//! [`GatewayConfig::unknown_extension_ttl`]: crate::GatewayConfig::unknown_extension_ttl

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_protocol::TtlCache;
use palisade_registry::changes::{Change, ChangeKind};
use palisade_registry::{Registry, RegistryError, ResolvedInstall};

/// A resolution: the install (if any) and whether it came from the cache.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    /// The tenant's enabled install of the extension.
    pub(crate) install: Option<Arc<ResolvedInstall>>,
    /// Whether it was answered from the cache (and so may be up to a TTL old).
    pub(crate) cached: bool,
}

type Key = (String, String);

/// Resolved installs by (tenant, extension), and apart from them the pairs that resolved
/// to nothing — an unknown extension id, or one the tenant has not installed — so that
/// calls naming ids that do not resolve neither reach the registry each time nor push real
/// installs out of the cache.
pub(crate) struct ResolveCache {
    /// `None`: caching installs is off.
    cache: Option<TtlCache<Key, Arc<ResolvedInstall>>>,
    ttl: Duration,
    /// `None`: caching absences is off.
    absent: Option<TtlCache<Key, ()>>,
    absent_ttl: Duration,
    /// Registry reads made so far.
    resolutions: AtomicU64,
}

impl ResolveCache {
    /// A cache keeping at most `capacity` resolutions for `ttl` each, and at most
    /// `absent_capacity` pairs without an install for `absent_ttl` each; a zero TTL or
    /// capacity turns that part off.
    pub(crate) fn new(
        ttl: Duration,
        capacity: usize,
        absent_ttl: Duration,
        absent_capacity: usize,
    ) -> Self {
        let on = !ttl.is_zero() && capacity > 0;
        let absent_on = !absent_ttl.is_zero() && absent_capacity > 0;
        ResolveCache {
            cache: on.then(|| TtlCache::new(capacity)),
            ttl,
            absent: absent_on.then(|| TtlCache::new(absent_capacity)),
            absent_ttl,
            resolutions: AtomicU64::new(0),
        }
    }

    /// The tenant's enabled install of `extension_id`, from the cache while it is fresh.
    pub(crate) async fn resolve(
        &self,
        registry: &Registry,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<Resolution, RegistryError> {
        let key = (tenant_id.to_owned(), extension_id.to_owned());
        let now = Instant::now();
        if let Some(install) = self.cache.as_ref().and_then(|c| c.get(&key, now)) {
            return Ok(Resolution {
                install: Some(install),
                cached: true,
            });
        }
        if self
            .absent
            .as_ref()
            .is_some_and(|c| c.get(&key, now).is_some())
        {
            return Ok(Resolution {
                install: None,
                cached: true,
            });
        }
        // A change invalidating the key while the registry is read voids the answer.
        let tickets = (
            self.cache.as_ref().map(|c| c.ticket(&key)),
            self.absent.as_ref().map(|c| c.ticket(&key)),
        );
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let install = registry
            .resolve(tenant_id, extension_id)
            .await?
            .map(Arc::new);
        let now = Instant::now();
        match (&install, tickets) {
            (Some(install), (Some(ticket), _)) => {
                if let (Some(cache), Some(expires)) = (&self.cache, now.checked_add(self.ttl)) {
                    cache.insert_since(ticket, key, install.clone(), expires, now);
                }
            }
            (None, (_, Some(ticket))) => {
                if let (Some(absent), Some(expires)) =
                    (&self.absent, now.checked_add(self.absent_ttl))
                {
                    absent.insert_since(ticket, key, (), expires, now);
                }
            }
            _ => {}
        }
        Ok(Resolution {
            install,
            cached: false,
        })
    }

    /// Forgets what is cached for the tenant's install of `extension_id`.
    pub(crate) fn invalidate(&self, tenant_id: &str, extension_id: &str) {
        let key = (tenant_id.to_owned(), extension_id.to_owned());
        if let Some(cache) = &self.cache {
            cache.invalidate(&key);
        }
        if let Some(absent) = &self.absent {
            absent.invalidate(&key);
        }
    }

    /// Forgets every resolution and absence.
    pub(crate) fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        if let Some(absent) = &self.absent {
            absent.clear();
        }
    }

    /// Drops what `change` makes stale: the (tenant, extension) of an install change,
    /// everything on a reset.
    pub(crate) fn apply(&self, change: &Change) {
        match (change.kind, &change.tenant_id, &change.extension_id) {
            (ChangeKind::Install, Some(tenant), Some(extension)) => {
                self.invalidate(tenant, extension);
            }
            (ChangeKind::Trust, _, _) => {}
            _ => self.clear(),
        }
    }

    /// How many times the registry was read.
    #[cfg(test)]
    pub(crate) fn registry_resolutions(&self) -> u64 {
        self.resolutions.load(Ordering::Relaxed)
    }

    /// How many resolutions (installs and absences) are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, TtlCache::len) + self.absent.as_ref().map_or(0, TtlCache::len)
    }
}
