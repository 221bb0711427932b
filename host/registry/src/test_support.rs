//! Helpers shared by the unit tests: a registry on a temporary directory, a publisher key
//! and bundles built from WAT components.

use std::path::{Path, PathBuf};

use palisade_bundle::archive::pack;
use palisade_bundle::signing::{SigningKey, TrustBundle};
use tempfile::TempDir;

use crate::{PublishedVersion, Registry, RegistryConfig};

/// A component importing nothing.
pub(crate) const EMPTY_COMPONENT: &str = "(component)";

/// A component importing the storage interface.
pub(crate) const STORAGE_COMPONENT: &str =
    r#"(component (import "palisade:extension/storage@0.1.0" (instance)))"#;

/// A fresh registry on a real SQLite file (or PostgreSQL schema, see [`crate::testing`])
/// and local object store under a temporary dir.
pub(crate) async fn open_registry() -> (TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(&dir);
    let registry = Registry::open(&config).await.unwrap();
    (dir, registry)
}

/// The config [`open_registry`] uses for `dir`.
pub(crate) fn config_in(dir: &TempDir) -> RegistryConfig {
    RegistryConfig {
        database_url: crate::testing::database_url(&dir.path().join("db")),
        objects: crate::ObjectStoreConfig::Local(dir.path().join("objects")),
    }
}

/// A registry, a publisher key it trusts and a trust bundle holding that key.
pub(crate) struct Fixture {
    pub dir: TempDir,
    pub registry: Registry,
    pub key: SigningKey,
    pub trust: TrustBundle,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let (dir, registry) = open_registry().await;
        let key = SigningKey::generate().unwrap();
        let trust = TrustBundle::from_keys(vec![key.public_key().clone()]).unwrap();
        registry.trust_key(key.public_key()).await.unwrap();
        Self {
            dir,
            registry,
            key,
            trust,
        }
    }

    /// Signs and publishes `bundle`.
    pub(crate) async fn publish(&self, bundle: &[u8]) -> PublishedVersion {
        let signature = self.key.sign(bundle).unwrap();
        self.registry
            .publish(bundle, &signature, &self.trust)
            .await
            .unwrap()
    }

    /// Builds, signs and publishes a bundle of `id` at `version` with an empty component.
    pub(crate) async fn publish_simple(
        &self,
        id: &str,
        version: &str,
        capabilities: serde_json::Value,
    ) -> PublishedVersion {
        let bundle = bundle(&manifest(id, version, capabilities), EMPTY_COMPONENT);
        self.publish(&bundle).await
    }

    /// Publishes `id` 1.0.0 (empty component, no capabilities) and installs it for
    /// `tenant`, approving `log`; returns the install id.
    pub(crate) async fn install_simple(&self, tenant: &str, id: &str) -> String {
        self.publish_simple(id, "1.0.0", serde_json::json!({}))
            .await;
        self.registry
            .install(
                tenant,
                id,
                None,
                &[palisade_bundle::CapabilityKey::Log],
                Default::default(),
            )
            .await
            .unwrap()
            .install_id
    }

    /// The object store directory.
    pub(crate) fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Rows in `table`.
    pub(crate) async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.registry.pool())
            .await
            .unwrap()
    }
}

/// A manifest for `id` at `version` requesting `capabilities`.
pub(crate) fn manifest(id: &str, version: &str, capabilities: serde_json::Value) -> Vec<u8> {
    manifest_with(id, version, capabilities, |_| {})
}

/// Like [`manifest`], with `edit` applied to the JSON before it is serialised.
pub(crate) fn manifest_with(
    id: &str,
    version: &str,
    capabilities: serde_json::Value,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let mut value = serde_json::json!({
        "id": id,
        "name": "Test extension",
        "publisher": "Example Inc.",
        "version": version,
        "runtime": "wasi-http@0.2",
        "component": "extension.wasm",
        "capabilities": capabilities,
        "api": {"endpoints": [{"method": "GET", "path": "/hello"}]},
    });
    edit(&mut value);
    serde_json::to_vec_pretty(&value).unwrap()
}

/// A bundle of `manifest_json` and the component written in `wat`.
pub(crate) fn bundle(manifest_json: &[u8], wat: &str) -> Vec<u8> {
    let component = wat::parse_str(wat).unwrap();
    pack(manifest_json, "extension.wasm", &component, &[]).unwrap()
}

/// Every file below `dir`.
pub(crate) fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
