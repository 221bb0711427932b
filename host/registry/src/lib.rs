//! The Palisade registry: the SQL database (schema, migrations, queries) holding extensions,
//! versions, bundles, tenant installs, grants, config, events, schedules and their deliveries
//! and the
//! execution log, and the object store holding bundle blobs and their signatures.
//!
//! [`Registry`] is the single handle to both; it is cheap to clone.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod changes;
pub mod credentials;
pub mod db;
pub mod error;
pub mod events;
pub mod executions;
pub mod idempotency;
pub mod install;
pub mod migrate;
pub mod objects;
pub mod publish;
pub mod query_metrics;
pub mod quota;
pub mod readiness;
pub mod resolve;
pub mod schedules;
pub mod secrets;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trust;

pub use credentials::{Credential, CredentialError, CredentialScope};
pub use error::{InstallError, InvalidTenantId, PublishError, RegistryError, TrustError};
pub use events::{
    AttemptEnd, ClaimedDelivery, Delivery, DeliveryState, EventError, NewEvent, PublishedEvent,
    Trigger,
};
pub use executions::ExecutionRecord;
pub use install::Install;
pub use objects::{BundleStore, ObjectStoreConfig, S3Config, S3Credentials};
pub use publish::{ExtensionSummary, PublishedVersion, ReplacedSignature, VersionSummary};
pub use resolve::ResolvedInstall;
pub use secrets::{SecretError, SecretOpener, SecretSealer, SecretValue};
pub use trust::{ExtensionSigner, TrustedKey};

use palisade_bundle::hash::ContentHash;

/// Where the registry keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Database URL: `sqlite:///var/lib/palisade/registry.db`, or
    /// `postgres://user@host:5432/db` (optionally `?options=-c%20search_path%3Dschema`).
    pub database_url: String,
    /// The object store holding bundles, signatures and precompiled artifacts.
    pub objects: ObjectStoreConfig,
}

/// Handle to the registry database and object store.
#[derive(Clone, Debug)]
pub struct Registry {
    pool: db::Pool,
    objects: BundleStore,
    /// On SQLite, write transactions of this process take turns here (first come, first
    /// served) rather than in SQLite's busy handler, which sleeps up to 100 ms between
    /// retries. PostgreSQL locks rows, so its writers do not queue.
    writes: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// What publish checks a component against: the runners' per-component caps.
    component_limits: palisade_bundle::ComponentLimits,
    /// Storage writes of one install take its lane before their turn above (or, on
    /// PostgreSQL, before a connection), so one install's flood cannot starve the others.
    lanes: std::sync::Arc<storage::lanes::WriteLanes>,
    /// The trust set last read from the database.
    trust: std::sync::Arc<trust::TrustCache>,
    /// How long the operations on a call's path take.
    queries: query_metrics::QueryMetrics,
}

impl Registry {
    /// Opens the registry described by `config`: creates the database (SQLite file or
    /// PostgreSQL schema) and object store directory if missing and applies any pending
    /// migrations.
    pub async fn open(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let objects = BundleStore::open(&config.objects)?;
        let pool = db::connect(&config.database_url).await?;
        db::migrate(&pool).await?;
        Ok(Self::from_parts(pool, objects))
    }

    /// A registry over an already migrated pool and any object store.
    pub fn from_parts(pool: db::Pool, objects: BundleStore) -> Self {
        let writes =
            (db::Backend::of_pool(&pool) == db::Backend::Sqlite).then(std::sync::Arc::default);
        Self {
            pool,
            objects,
            writes,
            component_limits: palisade_bundle::ComponentLimits::default(),
            lanes: std::sync::Arc::default(),
            trust: trust::TrustCache::new(trust::DEFAULT_TRUST_CACHE_TTL),
            queries: query_metrics::QueryMetrics::default(),
        }
    }

    /// The query-latency histogram of this registry handle and its clones, for a server's
    /// `/metrics`.
    pub fn query_metrics(&self) -> &query_metrics::QueryMetrics {
        &self.queries
    }

    /// The same registry checking published components against `limits` (the runners'
    /// `RuntimeConfig::component_limits`) instead of the defaults.
    pub fn with_component_limits(mut self, limits: palisade_bundle::ComponentLimits) -> Self {
        self.component_limits = limits;
        self
    }

    /// What publish checks a component against.
    pub fn component_limits(&self) -> &palisade_bundle::ComponentLimits {
        &self.component_limits
    }

    /// Waits for this process's turn to write; hold the guard until the write transaction
    /// has committed or rolled back.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writes {
            Some(writes) => Some(writes.lock().await),
            None => None,
        }
    }

    /// Begins a transaction that writes. On SQLite it takes the database's write lock at
    /// once (`BEGIN IMMEDIATE`, waiting up to the busy timeout for another process's
    /// writer): a deferred transaction that reads first could not later upgrade to writing
    /// while another process committed in between (`SQLITE_BUSY_SNAPSHOT`, which no busy
    /// timeout waits out). Take [`Self::write_turn`] first.
    ///
    /// The `BEGIN` runs in a task of its own, so that a caller dropped while it runs (a
    /// client that went away, a call past its deadline) cannot leave the connection in a
    /// transaction nobody holds: sqlx cannot roll back a transaction whose `BEGIN` was
    /// acknowledged but never handed over, and such a connection would go back to the
    /// pool holding SQLite's write lock, its later writes never committed.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let pool = self.pool.clone();
        let backend = self.backend();
        let begin = tokio::spawn(async move {
            match backend {
                db::Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                db::Backend::Postgres => pool.begin().await,
            }
        });
        // Dropping the handle detaches the task; it finishes, and drops (rolls back) the
        // transaction itself.
        begin
            .await
            .map_err(|error| sqlx::Error::Protocol(format!("beginning a transaction: {error}")))?
    }

    /// The database behind this registry.
    pub fn backend(&self) -> db::Backend {
        db::Backend::of_pool(&self.pool)
    }

    /// The database pool, for queries this crate does not wrap.
    pub fn pool(&self) -> &db::Pool {
        &self.pool
    }

    /// The bundle object store.
    pub fn objects(&self) -> &BundleStore {
        &self.objects
    }

    /// The bundle bytes and signature stored for `hash`, each checked against the hash its
    /// object key names.
    ///
    /// A bundle the database does not know, or a missing object, is
    /// [`RegistryError::BundleMissing`]; an object that does not match its key is
    /// [`RegistryError::ObjectMismatch`].
    pub async fn bundle_bytes(
        &self,
        hash: &ContentHash,
    ) -> Result<(Vec<u8>, Vec<u8>), RegistryError> {
        let row = sqlx::query(
            "SELECT object_key, signature_key FROM extension_bundle WHERE content_hash = $1",
        )
        .bind(hash.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(RegistryError::BundleMissing {
                hash: hash.to_string(),
                key: BundleStore::bundle_key(hash),
            });
        };
        let bundle_key: String = sqlx::Row::try_get(&row, "object_key")?;
        let signature_key: String = sqlx::Row::try_get(&row, "signature_key")?;
        let bundle = self.objects.read_bundle(hash, &bundle_key).await?;
        let signature = self.objects.read_signature(hash, &signature_key).await?;
        Ok((bundle, signature))
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Fixture, config_in};

    #[tokio::test]
    async fn reopening_keeps_the_data() {
        let fx = Fixture::new().await;
        let published = fx
            .publish_simple("com.example.kept", "1.0.0", serde_json::json!({}))
            .await;
        let reopened = Registry::open(&config_in(&fx.dir)).await.unwrap();
        let versions = reopened.list_versions("com.example.kept").await.unwrap();
        assert_eq!(versions[0].version_id, published.version_id);
        reopened
            .bundle_bytes(&published.content_hash)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn open_refuses_an_unusable_object_store_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let config = RegistryConfig {
            database_url: format!("sqlite://{}", dir.path().join("r.db").display()),
            objects: crate::ObjectStoreConfig::Local(file.clone()),
        };
        let err = Registry::open(&config).await.unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
