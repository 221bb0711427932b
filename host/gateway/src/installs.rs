//! Install resolution with a short-lived cache: a tenant's enabled install of an extension
//! — or the fact that there is none — is reused for [`GatewayConfig::install_cache_ttl`]
//! instead of being read from the registry on every call.
//!
//! Staleness is bounded three ways: entries expire after the TTL; the admin API of this
//! gateway forgets an entry as soon as it changes the install; and a runner checks the
//! install the gateway names against the registry on every call, answering 404 when it was
//! disabled, removed or moved to another version — on which the gateway forgets the entry,
//! resolves again and, if the install still exists, sends the call once more (nothing ran).
//!
//! [`GatewayConfig::install_cache_ttl`]: crate::GatewayConfig::install_cache_ttl

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_protocol::TtlCache;
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

/// Resolved installs by (tenant, extension).
pub(crate) struct InstallCache {
    /// `None`: caching is off.
    cache: Option<TtlCache<Key, Option<Arc<ResolvedInstall>>>>,
    ttl: Duration,
}

impl InstallCache {
    /// A cache keeping at most `capacity` resolutions for `ttl` each; a zero `ttl` or
    /// `capacity` turns it off.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let on = !ttl.is_zero() && capacity > 0;
        InstallCache {
            cache: on.then(|| TtlCache::new(capacity)),
            ttl,
        }
    }

    /// The tenant's enabled install of `extension_id`, from the cache while it is fresh.
    pub(crate) async fn resolve(
        &self,
        registry: &Registry,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<Resolution, RegistryError> {
        let Some(cache) = &self.cache else {
            let install = registry.resolve(tenant_id, extension_id).await?;
            return Ok(Resolution {
                install: install.map(Arc::new),
                cached: false,
            });
        };
        let key = (tenant_id.to_owned(), extension_id.to_owned());
        if let Some(install) = cache.get(&key, Instant::now()) {
            return Ok(Resolution {
                install,
                cached: true,
            });
        }
        // A change invalidating the key while the registry is read voids the answer.
        let ticket = cache.ticket(&key);
        let install = registry
            .resolve(tenant_id, extension_id)
            .await?
            .map(Arc::new);
        let now = Instant::now();
        if let Some(expires) = now.checked_add(self.ttl) {
            cache.insert_since(ticket, key, install.clone(), expires, now);
        }
        Ok(Resolution {
            install,
            cached: false,
        })
    }

    /// Forgets what is cached for the tenant's install of `extension_id`.
    pub(crate) fn invalidate(&self, tenant_id: &str, extension_id: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&(tenant_id.to_owned(), extension_id.to_owned()));
        }
    }

    /// How many resolutions are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, TtlCache::len)
    }
}
