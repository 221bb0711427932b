//! Publisher trust kept in the registry: the publisher keys the platform trusts, and which
//! keys may sign new versions of an extension id.
//!
//! The trusted keys live in the database, so every process using the registry (gateways,
//! runners, the CLI) sees the same set; each drops what it read at once after a change made
//! through the same handle, within one poll of a change made elsewhere when it follows the
//! change sequence ([`Registry::follow_changes`]), and otherwise after
//! [`DEFAULT_TRUST_CACHE_TTL`] (see [`Registry::with_trust_cache_ttl`]).
//!
//! An extension id belongs to the key that first published it. Another key may sign new
//! versions of it only when the operator allowed that key for the id
//! ([`Registry::allow_signer`]); an id may also be reserved for a key before its first
//! publish the same way.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use palisade_bundle::manifest::Manifest;
use palisade_bundle::signing::{KeyFingerprint, PublicKey, TrustBundle};
use sqlx::Row;

use crate::Registry;
use crate::changes::{self, ChangeKind};
use crate::db::now_millis;
use crate::error::{PublishError, RegistryError, TrustError};

/// How long a registry handle reuses the trust set it read, unless configured otherwise.
pub const DEFAULT_TRUST_CACHE_TTL: Duration = Duration::from_secs(300);

/// A trusted publisher key, as stored.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The key.
    pub key: PublicKey,
    /// When it was trusted, unix epoch milliseconds.
    pub created_at_ms: i64,
}

/// The trust set last read, shared by the clones of one registry handle.
#[derive(Debug)]
pub(crate) struct TrustCache {
    ttl: Duration,
    current: RwLock<Option<(Instant, Arc<TrustBundle>)>>,
}

impl TrustCache {
    pub(crate) fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(TrustCache {
            ttl,
            current: RwLock::new(None),
        })
    }

    fn fresh(&self) -> Option<Arc<TrustBundle>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((read_at, set)) if read_at.elapsed() < self.ttl => Some(Arc::clone(set)),
            _ => None,
        }
    }

    fn store(&self, set: Arc<TrustBundle>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), set));
    }

    pub(crate) fn clear(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// How a key came to be allowed for an extension id.
pub const SOURCE_FIRST_PUBLISH: &str = "first-publish";
/// See [`SOURCE_FIRST_PUBLISH`].
pub const SOURCE_OPERATOR: &str = "operator";

/// A key allowed to sign new versions of an extension id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSigner {
    /// The extension id.
    pub extension_id: String,
    /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo.
    pub fingerprint: String,
    /// `first-publish` or `operator`.
    pub source: String,
    /// When the key was allowed, unix epoch milliseconds.
    pub created_at_ms: i64,
}

impl Registry {
    /// The same registry, reusing the trust set it read for `ttl` (zero: read it on every
    /// use). The longest a trust change made elsewhere takes to reach this handle.
    pub fn with_trust_cache_ttl(mut self, ttl: Duration) -> Self {
        self.trust = TrustCache::new(ttl);
        self
    }

    /// The publisher keys trusted now, read from the database at most every trust-cache
    /// TTL. Empty when no key is trusted.
    pub async fn trust_set(&self) -> Result<Arc<TrustBundle>, RegistryError> {
        if let Some(set) = self.trust.fresh() {
            return Ok(set);
        }
        let keys = self.trusted_keys().await?;
        let set = Arc::new(TrustBundle::from_keys_allow_empty(
            keys.into_iter().map(|k| k.key).collect(),
        ));
        self.trust.store(Arc::clone(&set));
        Ok(set)
    }

    /// Every trusted publisher key, oldest first.
    pub async fn trusted_keys(&self) -> Result<Vec<TrustedKey>, RegistryError> {
        let rows = sqlx::query(
            "SELECT fingerprint, public_key_pem, created_at FROM publisher_key \
             ORDER BY created_at, fingerprint",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let fingerprint: String = row.try_get("fingerprint")?;
                let pem: String = row.try_get("public_key_pem")?;
                let key = PublicKey::from_pem(pem.as_bytes()).map_err(|e| {
                    RegistryError::corrupt("publisher_key", "public_key_pem", &fingerprint, e)
                })?;
                if key.fingerprint().as_str() != fingerprint {
                    return Err(RegistryError::corrupt(
                        "publisher_key",
                        "fingerprint",
                        &fingerprint,
                        format!("the stored key's fingerprint is {}", key.fingerprint()),
                    ));
                }
                Ok(TrustedKey {
                    key,
                    created_at_ms: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Trusts the publisher key `key`. Returns whether it was not trusted before. Every
    /// process using this registry accepts it within its trust-cache TTL; this handle at
    /// once.
    pub async fn trust_key(&self, key: &PublicKey) -> Result<bool, RegistryError> {
        let fingerprint = key.fingerprint();
        let added = {
            let _turn = self.write_turn().await;
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(
                "INSERT INTO publisher_key (fingerprint, algorithm, public_key_pem, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO NOTHING",
            )
            .bind(fingerprint.as_str())
            .bind(key.algorithm().as_str())
            .bind(key.to_pem())
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            let added = done.rows_affected() > 0;
            if added {
                changes::record(&mut tx, ChangeKind::Trust, None, None, None).await?;
            }
            tx.commit().await?;
            added
        };
        self.trust.clear();
        if added {
            tracing::info!(key = %fingerprint, "publisher key trusted");
        }
        Ok(added)
    }

    /// Stops trusting the key `fingerprint`: bundles signed only by it are no longer
    /// published, installed or run (until signed again with a trusted key). Returns
    /// whether it was trusted. The keys allowed per extension id are kept.
    pub async fn untrust_key(&self, fingerprint: &KeyFingerprint) -> Result<bool, RegistryError> {
        let removed = {
            let _turn = self.write_turn().await;
            let mut tx = self.begin_write().await?;
            let done = sqlx::query("DELETE FROM publisher_key WHERE fingerprint = $1")
                .bind(fingerprint.as_str())
                .execute(&mut *tx)
                .await?;
            let removed = done.rows_affected() > 0;
            if removed {
                changes::record(&mut tx, ChangeKind::Trust, None, None, None).await?;
            }
            tx.commit().await?;
            removed
        };
        self.trust.clear();
        if removed {
            tracing::info!(key = %fingerprint, "publisher key no longer trusted");
        }
        Ok(removed)
    }

    /// Allows the key `fingerprint` to sign new versions of `extension_id` (which need not
    /// be published yet: a first publish by another key is then refused). Returns whether
    /// the key was not allowed before.
    pub async fn allow_signer(
        &self,
        extension_id: &str,
        fingerprint: &KeyFingerprint,
    ) -> Result<bool, TrustError> {
        check_extension_id(extension_id)?;
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "INSERT INTO extension_signer (extension_id, fingerprint, source, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (extension_id, fingerprint) DO NOTHING",
        )
        .bind(extension_id)
        .bind(fingerprint.as_str())
        .bind(SOURCE_OPERATOR)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        let added = done.rows_affected() > 0;
        if added {
            tracing::info!(extension_id, key = %fingerprint, "key allowed to sign the extension");
        }
        Ok(added)
    }

    /// Withdraws the key `fingerprint` from `extension_id` (also the key of its first
    /// publish). Returns whether it was allowed. Versions already published stay.
    pub async fn disallow_signer(
        &self,
        extension_id: &str,
        fingerprint: &KeyFingerprint,
    ) -> Result<bool, TrustError> {
        check_extension_id(extension_id)?;
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "DELETE FROM extension_signer WHERE extension_id = $1 AND fingerprint = $2",
        )
        .bind(extension_id)
        .bind(fingerprint.as_str())
        .execute(&self.pool)
        .await?;
        let removed = done.rows_affected() > 0;
        if removed {
            tracing::info!(extension_id, key = %fingerprint, "key no longer allowed to sign the extension");
        }
        Ok(removed)
    }

    /// The keys allowed to sign new versions of `extension_id`, oldest first; empty when
    /// the id is neither published nor reserved.
    pub async fn extension_signers(
        &self,
        extension_id: &str,
    ) -> Result<Vec<ExtensionSigner>, RegistryError> {
        signers(&self.pool, Some(extension_id)).await
    }

    /// Every key allowed per extension id, by id, oldest first.
    pub async fn all_extension_signers(&self) -> Result<Vec<ExtensionSigner>, RegistryError> {
        signers(&self.pool, None).await
    }

    /// Refuses a publish of `manifest` signed by `signer` when the id belongs to other keys.
    /// `conn` is the publish transaction (or the pool for the early check).
    pub(crate) async fn check_signer<'c, E>(
        conn: E,
        manifest: &Manifest,
        signer: &KeyFingerprint,
    ) -> Result<SignerCheck, PublishError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let allowed: Vec<String> = sqlx::query_scalar(
            "SELECT fingerprint FROM extension_signer WHERE extension_id = $1 \
             ORDER BY created_at, fingerprint",
        )
        .bind(&manifest.id)
        .fetch_all(conn)
        .await?;
        if allowed.is_empty() {
            Ok(SignerCheck::FirstPublish)
        } else if allowed.iter().any(|fp| fp == signer.as_str()) {
            Ok(SignerCheck::Allowed)
        } else {
            Err(PublishError::SignerNotAllowed {
                extension_id: manifest.id.clone(),
                allowed,
                signer: signer.to_string(),
            })
        }
    }
}

/// What [`Registry::check_signer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignerCheck {
    /// No key holds the id yet: this publish makes the signer its owner.
    FirstPublish,
    /// The signer is allowed for the id.
    Allowed,
}

async fn signers(
    pool: &crate::db::Pool,
    extension_id: Option<&str>,
) -> Result<Vec<ExtensionSigner>, RegistryError> {
    let rows = match extension_id {
        Some(id) => {
            sqlx::query(
                "SELECT extension_id, fingerprint, source, created_at FROM extension_signer \
                 WHERE extension_id = $1 ORDER BY created_at, fingerprint",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT extension_id, fingerprint, source, created_at FROM extension_signer \
                 ORDER BY extension_id, created_at, fingerprint",
            )
            .fetch_all(pool)
            .await?
        }
    };
    rows.into_iter()
        .map(|row| {
            Ok(ExtensionSigner {
                extension_id: row.try_get("extension_id")?,
                fingerprint: row.try_get("fingerprint")?,
                source: row.try_get("source")?,
                created_at_ms: row.try_get("created_at")?,
            })
        })
        .collect()
}

fn check_extension_id(extension_id: &str) -> Result<(), TrustError> {
    Manifest::check_id(extension_id).map_err(|e| TrustError::InvalidExtensionId {
        extension_id: extension_id.to_owned(),
        reason: e.message,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use palisade_bundle::signing::SigningKey;

    use super::*;
    use crate::test_support::{config_in, open_registry};

    #[tokio::test]
    async fn a_trust_change_reaches_another_handle_within_its_ttl() {
        let (dir, here) = open_registry().await;
        // Another process on the same database, with its own cache.
        let there = Registry::open(&config_in(&dir))
            .await
            .unwrap()
            .with_trust_cache_ttl(Duration::from_millis(200));
        let key = SigningKey::generate().unwrap();
        let fp = key.public_key().fingerprint();
        let bytes = b"bundle bytes";
        let signature = key.sign(bytes).unwrap();

        let before = there.trust_set().await.unwrap();
        assert!(before.is_empty());
        assert!(matches!(
            before.verify(bytes, &signature),
            Err(palisade_bundle::SigningError::NoTrustedKeys)
        ));

        assert!(here.trust_key(key.public_key()).await.unwrap());
        assert!(!here.trust_key(key.public_key()).await.unwrap());
        // This handle sees its own change at once, the other one within its TTL.
        assert!(here.trust_set().await.unwrap().contains(&fp));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            there
                .trust_set()
                .await
                .unwrap()
                .verify(bytes, &signature)
                .unwrap(),
            fp
        );

        assert!(here.untrust_key(&fp).await.unwrap());
        assert!(!here.untrust_key(&fp).await.unwrap());
        assert!(!here.trust_set().await.unwrap().contains(&fp));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            there
                .trust_set()
                .await
                .unwrap()
                .verify(bytes, &signature)
                .is_err()
        );

        let listed = here.trusted_keys().await.unwrap();
        assert!(listed.is_empty());
    }
}
