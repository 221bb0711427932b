//! The `storage` capability's backend: the registry's storage queries, under the
//! operator's [`StorageLimits`].

use std::sync::Arc;

use palisade_registry::Registry;
use palisade_registry::storage::{StorageQuota, StorageWriteError, WriteCondition};
use palisade_runtime::capability::storage::{
    BackendError, BackendFuture, Condition, Scope, StorageBackend, StorageLimits, StoredEntry,
    StoredPage, WriteBounds, WriteRate,
};

/// Keeps extension storage in the registry database.
#[derive(Debug, Clone)]
pub struct RegistryStorage {
    registry: Registry,
    limits: StorageLimits,
    /// The per-install write rate of this runner, shared by clones.
    rate: Arc<WriteRate>,
}

impl RegistryStorage {
    /// A backend over `registry` enforcing `limits`.
    pub fn new(registry: Registry, limits: StorageLimits) -> Self {
        let rate = Arc::new(WriteRate::new(
            limits.install_writes_per_second,
            limits.install_write_burst,
        ));
        RegistryStorage {
            registry,
            limits,
            rate,
        }
    }

    /// The same, ready for [`HostServices::storage`](palisade_runtime::HostServices).
    pub fn shared(registry: Registry, limits: StorageLimits) -> Arc<dyn StorageBackend> {
        Arc::new(Self::new(registry, limits))
    }
}

fn condition(condition: Condition) -> WriteCondition {
    match condition {
        Condition::Any => WriteCondition::Any,
        Condition::MustNotExist => WriteCondition::MustNotExist,
        Condition::MustEqualRevision(revision) => WriteCondition::MustEqualRevision(revision),
    }
}

fn write_error(error: StorageWriteError) -> BackendError {
    match error {
        StorageWriteError::Conflict { current } => BackendError::Conflict { current },
        StorageWriteError::QuotaExceeded(which) => BackendError::QuotaExceeded(which.to_string()),
        StorageWriteError::Registry(error) => BackendError::unavailable(error),
    }
}

fn entry(entry: palisade_registry::storage::StorageEntry) -> StoredEntry {
    StoredEntry {
        key: entry.key,
        value: entry.value,
        revision: entry.revision,
    }
}

impl StorageBackend for RegistryStorage {
    fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    fn get<'a>(&'a self, scope: Scope<'a>, key: &'a str) -> BackendFuture<'a, Option<StoredEntry>> {
        Box::pin(async move {
            self.registry
                .storage_get(scope.install_id, scope.namespace, key)
                .await
                .map(|found| found.map(entry))
                .map_err(BackendError::unavailable)
        })
    }

    fn set<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        value: &'a [u8],
        when: Condition,
        quota: WriteBounds,
    ) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let quota = StorageQuota {
                max_keys_per_namespace: quota.max_keys_per_namespace,
                max_bytes: quota.max_bytes,
            };
            self.registry
                .storage_set(
                    scope.install_id,
                    scope.namespace,
                    key,
                    value,
                    condition(when),
                    &quota,
                )
                .await
                .map_err(write_error)
        })
    }

    fn delete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        when: Condition,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            self.registry
                .storage_delete(scope.install_id, scope.namespace, key, condition(when))
                .await
                .map_err(write_error)
        })
    }

    fn list<'a>(
        &'a self,
        scope: Scope<'a>,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
        max_bytes: u64,
    ) -> BackendFuture<'a, StoredPage> {
        Box::pin(async move {
            let page = self
                .registry
                .storage_list(
                    scope.install_id,
                    scope.namespace,
                    prefix,
                    after,
                    limit,
                    max_bytes,
                )
                .await
                .map_err(BackendError::unavailable)?;
            Ok(StoredPage {
                entries: page.entries.into_iter().map(entry).collect(),
                more: page.more,
            })
        })
    }

    fn write_rate(&self) -> Option<&WriteRate> {
        Some(&self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: WriteBounds = WriteBounds {
        max_keys_per_namespace: 10,
        max_bytes: 100,
    };

    /// A backend over a fresh registry with one install of an extension granted storage.
    async fn backend(dir: &tempfile::TempDir) -> (Registry, RegistryStorage, String) {
        let manifest = serde_json::json!({
            "id": "com.example.store",
            "name": "Store",
            "publisher": "Example",
            "version": "1.0.0",
            "runtime": "wasi-http@0.2",
            "component": "store.wasm",
            "capabilities": { "storage": { "namespaces": ["notes"] } },
            "api": { "endpoints": [ { "method": "GET", "path": "/x" } ] }
        });
        let (registry, install_id) =
            crate::test_support::registry_with_install(dir, &manifest).await;
        let backend = RegistryStorage::new(registry.clone(), StorageLimits::default());
        (registry, backend, install_id)
    }

    fn scope(install_id: &str) -> Scope<'_> {
        Scope {
            install_id,
            namespace: "notes",
        }
    }

    #[tokio::test]
    async fn writes_reads_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, backend, install) = backend(&dir).await;
        let s = scope(&install);
        assert!(backend.get(s, "a").await.unwrap().is_none());
        let rev = backend
            .set(s, "a", b"one", Condition::MustNotExist, QUOTA)
            .await
            .unwrap();
        backend
            .set(s, "b", b"two", Condition::Any, QUOTA)
            .await
            .unwrap();
        let found = backend.get(s, "a").await.unwrap().unwrap();
        assert_eq!((found.value, found.revision), (b"one".to_vec(), rev));

        let page = backend.list(s, "", None, 1, 1000).await.unwrap();
        assert_eq!(page.entries[0].key, "a");
        assert!(page.more);
        let page = backend.list(s, "", Some("a"), 1, 1000).await.unwrap();
        assert_eq!(page.entries[0].key, "b");
        assert!(!page.more);

        assert!(
            backend
                .delete(s, "a", Condition::MustEqualRevision(rev))
                .await
                .unwrap()
        );
        assert_eq!(backend.limits(), &StorageLimits::default());
        // Pages stop at the byte cap: `b` (4 bytes) fits in 5, `b` and `c` (2) do not.
        backend
            .set(s, "c", b"x", Condition::Any, QUOTA)
            .await
            .unwrap();
        let page = backend.list(s, "", None, 10, 5).await.unwrap();
        assert_eq!(page.entries.len(), 1);
        assert!(page.more);
    }

    #[tokio::test]
    async fn the_write_rate_follows_the_limits_and_is_shared_by_clones() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _, install) = backend(&dir).await;
        let limits = StorageLimits {
            install_writes_per_second: 1,
            install_write_burst: 2,
            ..StorageLimits::default()
        };
        let backend = RegistryStorage::new(registry, limits);
        let clone = backend.clone();
        let rate = backend.write_rate().unwrap();
        assert_eq!(rate.per_second(), 1);
        assert!(rate.check(&install));
        assert!(clone.write_rate().unwrap().check(&install));
        assert!(
            !rate.check(&install),
            "the burst of 2 is spent across clones"
        );
    }

    #[tokio::test]
    async fn refusals_map_to_the_runtime_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (_, backend, install) = backend(&dir).await;
        let s = scope(&install);
        let rev = backend
            .set(s, "a", b"v", Condition::Any, QUOTA)
            .await
            .unwrap();
        let err = backend
            .set(s, "a", b"w", Condition::MustNotExist, QUOTA)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Conflict { current: Some(c) } if c == rev),
            "{err:?}"
        );
        let err = backend
            .set(s, "big", &[0; 200], Condition::Any, QUOTA)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BackendError::QuotaExceeded(which) if which.contains("limit of 100")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_registry_failure_is_unavailable_with_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, backend, install) = backend(&dir).await;
        registry.pool().close().await;
        let err = backend.get(scope(&install), "a").await.unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("registry database"), "{err}");
        let err = backend
            .set(scope(&install), "a", b"v", Condition::Any, QUOTA)
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    }
}
