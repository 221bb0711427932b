//! The installs a runner has looked up recently, so that a call does not read the
//! registry's database every time.
//!
//! An entry is trusted for `ttl`, and dropped sooner when the registry's change sequence
//! (which the runner follows every 500 ms) names its install: an install disabled,
//! uninstalled or reconfigured in the registry is seen by the runner within a poll, or
//! within the TTL if the sequence cannot be read. A call whose context names another
//! version than the cached entry (an upgrade the gateway already saw) reloads the install at
//! once instead of waiting for the entry to expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_protocol::TtlCache;
use palisade_registry::changes::{Change, ChangeKind};
use palisade_registry::{Registry, RegistryError, ResolvedInstall};

/// A bounded, time-limited cache of [`Registry::load_install`]: the install, or the fact
/// that there is no enabled one, by install id.
#[derive(Debug)]
pub(crate) struct InstallCache {
    /// `None`: caching is off.
    entries: Option<TtlCache<String, Option<Arc<ResolvedInstall>>>>,
    ttl: Duration,
}

impl InstallCache {
    /// A cache keeping up to `capacity` installs (at least one) for `ttl` each; a zero
    /// `ttl` disables it.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        InstallCache {
            entries: (!ttl.is_zero()).then(|| TtlCache::new(capacity)),
            ttl,
        }
    }

    /// The enabled install `install_id`, from the cache while its entry is fresh and
    /// `fits` accepts it, otherwise from the registry.
    pub(crate) async fn get(
        &self,
        registry: &Registry,
        install_id: &str,
        fits: impl Fn(&ResolvedInstall) -> bool,
    ) -> Result<Option<Arc<ResolvedInstall>>, RegistryError> {
        let Some(entries) = &self.entries else {
            return Ok(registry.load_install(install_id).await?.map(Arc::new));
        };
        if let Some(Some(install)) = entries.get(install_id, Instant::now())
            && fits(&install)
        {
            return Ok(Some(install));
        }
        // Not cached, cached as not found, or not what the caller expects: ask the registry.
        let install = registry.load_install(install_id).await?.map(Arc::new);
        let now = Instant::now();
        if let Some(expires) = now.checked_add(self.ttl) {
            entries.insert(install_id.to_owned(), install.clone(), expires, now);
        }
        Ok(install)
    }

    /// Drops what `change` makes stale: the install of an install change, everything on
    /// a reset.
    pub(crate) fn apply(&self, change: &Change) {
        let Some(entries) = &self.entries else {
            return;
        };
        match (change.kind, &change.install_id) {
            (ChangeKind::Install, Some(install_id)) => entries.invalidate(install_id.as_str()),
            (ChangeKind::Trust, _) => {}
            _ => entries.clear(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, TtlCache::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry on `dir` with one install of an extension for tenant `acme`.
    async fn fixture(dir: &tempfile::TempDir) -> (Registry, String) {
        let manifest = serde_json::json!({
            "id": "com.example.cached",
            "name": "Cached",
            "publisher": "Example",
            "version": "1.0.0",
            "runtime": "wasi-http@0.2",
            "component": "c.wasm",
            "api": { "endpoints": [ { "method": "GET", "path": "/x" } ] }
        });
        crate::test_support::registry_with_install(dir, &manifest).await
    }

    async fn disable(registry: &Registry) {
        assert!(
            registry
                .set_enabled("acme", "com.example.cached", false)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn fresh_entries_are_served_until_the_caller_expects_something_else() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, install_id) = fixture(&dir).await;
        let cache = InstallCache::new(Duration::from_secs(60), 16);
        let first = cache.get(&registry, &install_id, |_| true).await.unwrap();
        assert!(first.is_some());
        disable(&registry).await;
        // Still cached: the disable is seen once the entry expires.
        let cached = cache.get(&registry, &install_id, |_| true).await.unwrap();
        assert!(cached.is_some());
        // A caller that expects another install reloads at once.
        let reloaded = cache.get(&registry, &install_id, |_| false).await.unwrap();
        assert!(reloaded.is_none());
    }

    #[tokio::test]
    async fn a_zero_ttl_always_reads_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, install_id) = fixture(&dir).await;
        let cache = InstallCache::new(Duration::ZERO, 16);
        let found = cache.get(&registry, &install_id, |_| true).await.unwrap();
        assert!(found.is_some());
        disable(&registry).await;
        let gone = cache.get(&registry, &install_id, |_| true).await.unwrap();
        assert!(gone.is_none());
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = fixture(&dir).await;
        let cache = InstallCache::new(Duration::from_secs(60), 4);
        for n in 0..10 {
            let missing = format!("missing-{n}");
            assert!(
                cache
                    .get(&registry, &missing, |_| true)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(cache.len() <= 4);
        }
    }
}
