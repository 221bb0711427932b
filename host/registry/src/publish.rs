//! Publishing signed bundles, and listing what is published.

use std::collections::HashMap;

use palisade_bundle::archive::{UnpackLimits, unpack};
use palisade_bundle::component::{ComponentLimits, check_component};
use palisade_bundle::hash::ContentHash;
use palisade_bundle::imports::{check_imports, component_imports};
use palisade_bundle::manifest::{Capabilities, CapabilityKey, Manifest};
use palisade_bundle::signing::{KeyFingerprint, TrustBundle, decode_signature};
use sqlx::Row;

use crate::Registry;
use crate::db::{is_unique_violation, now_millis};
use crate::error::{PublishError, RegistryError};
use crate::trust::{SOURCE_FIRST_PUBLISH, SignerCheck};

/// A version as published (or as found, when the same bundle was published before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedVersion {
    /// The version's row id (a UUID).
    pub version_id: String,
    /// The manifest id.
    pub extension_id: String,
    /// The version (semver text).
    pub version: String,
    /// Content hash of the bundle.
    pub content_hash: ContentHash,
}

/// One published extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSummary {
    /// The manifest id.
    pub id: String,
    /// Name from the most recently published manifest.
    pub name: String,
    /// Publisher on record.
    pub publisher: String,
    /// The newest version (releases before pre-releases), if any.
    pub latest_version: Option<String>,
    /// When the first version was published, unix epoch milliseconds.
    pub created_at_ms: i64,
}

/// One published version of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    /// The version's row id.
    pub version_id: String,
    /// The manifest id.
    pub extension_id: String,
    /// The version (semver text).
    pub version: String,
    /// Content hash of the bundle.
    pub content_hash: ContentHash,
    /// The capabilities the manifest requests; a tenant must approve all of them.
    pub requested: Vec<CapabilityKey>,
    /// Fingerprint of the key that signed the bundle.
    pub signer_fingerprint: String,
    /// The UI entry document (below `ui/`), if the version has a UI.
    pub ui_entry: Option<String>,
    /// When it was published, unix epoch milliseconds.
    pub published_at_ms: i64,
}

/// A signature a bundle carried before it was signed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedSignature {
    /// The signature, as it was submitted.
    pub signature: Vec<u8>,
    /// Fingerprint of the key that made it.
    pub signer_fingerprint: String,
    /// When it was replaced, unix epoch milliseconds.
    pub replaced_at_ms: i64,
}

/// A bundle that passed every check and is ready to be stored.
struct CheckedBundle {
    signer: KeyFingerprint,
    content_hash: ContentHash,
    manifest: Manifest,
    manifest_json: String,
    imports: Vec<String>,
}

/// Verifies, hashes, unpacks and checks a bundle, in that order: nothing is decompressed
/// before the signature over the exact bytes is verified.
fn check_bundle(
    bundle: &[u8],
    signature: &[u8],
    trust: &TrustBundle,
    limits: &ComponentLimits,
) -> Result<CheckedBundle, PublishError> {
    let signer = trust
        .verify(bundle, &decode_signature(signature))
        .map_err(PublishError::Signature)?;
    let content_hash = ContentHash::of(bundle);
    let unpacked = unpack(bundle, &UnpackLimits::default())?;
    // `unpack` parsed the manifest; validate it again as stored, in case that ever changes.
    let manifest = Manifest::from_json(&unpacked.manifest_json).map_err(PublishError::Manifest)?;
    let manifest_json = String::from_utf8(unpacked.manifest_json).map_err(|_| {
        PublishError::Manifest(palisade_bundle::manifest::ManifestError::new(
            "",
            "manifest.json is not UTF-8",
        ))
    })?;
    let imports = component_imports(&unpacked.component).map_err(PublishError::Imports)?;
    check_imports(&imports, &manifest.capabilities).map_err(PublishError::Imports)?;
    check_component(&unpacked.component, limits).map_err(PublishError::Component)?;
    Ok(CheckedBundle {
        signer,
        content_hash,
        manifest,
        manifest_json,
        imports,
    })
}

impl Registry {
    /// Publishes a signed bundle.
    ///
    /// The signature is verified over the exact bytes before anything else; then the
    /// bundle is hashed, unpacked within limits, its manifest validated, its
    /// component's imports checked against the manifest's capabilities and the component
    /// checked against the runners' engine ([`Registry::component_limits`]). Only then are the
    /// blob and signature stored and the rows written (in one transaction).
    ///
    /// Publishing the same id and version again with the same bytes returns the existing
    /// version; with other bytes it is [`PublishError::VersionExists`]. The same bytes
    /// signed by another key allowed for the id (e.g. after the first key was removed from
    /// the trust set) replace the stored signature; the replaced one is kept in the
    /// bundle's signature history ([`Registry::signature_history`]).
    pub async fn publish(
        &self,
        bundle: &[u8],
        signature: &[u8],
        trust: &TrustBundle,
    ) -> Result<PublishedVersion, PublishError> {
        let checked = {
            let (bundle, signature, trust) = (bundle.to_vec(), signature.to_vec(), trust.clone());
            let limits = self.component_limits;
            match tokio::task::spawn_blocking(move || {
                check_bundle(&bundle, &signature, &trust, &limits)
            })
            .await
            {
                Ok(result) => result?,
                Err(err) => match err.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => return Err(PublishError::Interrupted),
                },
            }
        };
        let extension_id = checked.manifest.id.clone();
        let version = checked.manifest.version.to_string();

        if let Some(existing) = self.published_version(&extension_id, &version).await? {
            return self
                .republished(existing, &checked, bundle, signature)
                .await;
        }
        self.check_publisher(&checked.manifest).await?;
        Registry::check_signer(&self.pool, &checked.manifest, &checked.signer).await?;

        let keys = self
            .store_objects(&checked.content_hash, bundle, signature)
            .await?;

        match self.insert_version(&checked, bundle.len(), &keys).await {
            Ok(published) => {
                tracing::info!(
                    extension_id = %published.extension_id,
                    version = %published.version,
                    content_hash = %published.content_hash,
                    signer = %checked.signer,
                    "extension version published"
                );
                Ok(published)
            }
            Err(PublishError::Registry(RegistryError::Database(err)))
                if is_unique_violation(&err) =>
            {
                // Someone published the same version concurrently.
                match self.published_version(&extension_id, &version).await? {
                    Some(existing) => {
                        self.republished(existing, &checked, bundle, signature)
                            .await
                    }
                    None => Err(RegistryError::Database(err).into()),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Handles a publish of an id and version that already exist.
    async fn republished(
        &self,
        existing: PublishedVersion,
        checked: &CheckedBundle,
        bundle: &[u8],
        signature: &[u8],
    ) -> Result<PublishedVersion, PublishError> {
        if existing.content_hash != checked.content_hash {
            return Err(PublishError::VersionExists {
                extension_id: existing.extension_id,
                version: existing.version,
                existing: existing.content_hash.to_string(),
                attempted: checked.content_hash.to_string(),
            });
        }
        Registry::check_signer(&self.pool, &checked.manifest, &checked.signer).await?;
        let current: String =
            sqlx::query_scalar("SELECT signer_fingerprint FROM extension_version WHERE id = $1")
                .bind(&existing.version_id)
                .fetch_one(&self.pool)
                .await?;
        if current == checked.signer.as_str() {
            // Same bytes, same key: make sure the objects are there (restores a lost blob)
            // and carry this signature, which the same key made.
            let keys = self
                .store_objects(&checked.content_hash, bundle, signature)
                .await?;
            let _turn = self.write_turn().await;
            sqlx::query("UPDATE extension_bundle SET signature_key = $1 WHERE content_hash = $2")
                .bind(&keys.signature)
                .bind(checked.content_hash.to_string())
                .execute(&self.pool)
                .await?;
            return Ok(existing);
        }
        self.resign(&existing, checked, bundle, signature, current)
            .await?;
        Ok(existing)
    }

    /// The same bytes signed by another key: the new signature replaces the stored one, which
    /// is kept in `bundle_signature_history`.
    async fn resign(
        &self,
        existing: &PublishedVersion,
        checked: &CheckedBundle,
        bundle: &[u8],
        signature: &[u8],
        previous_signer: String,
    ) -> Result<(), PublishError> {
        let hash = &checked.content_hash;
        let previous = match self.bundle_bytes(hash).await {
            Ok((_, previous)) => previous,
            Err(RegistryError::BundleMissing { .. } | RegistryError::ObjectMismatch { .. }) => {
                Vec::new()
            }
            Err(err) => return Err(err.into()),
        };
        let keys = self.store_objects(hash, bundle, signature).await?;
        let now = now_millis();
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE extension_bundle SET signature_key = $1 WHERE content_hash = $2")
            .bind(&keys.signature)
            .bind(hash.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bundle_signature_history (id, content_hash, signature, \
             signer_fingerprint, replaced_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(hash.to_string())
        .bind(previous)
        .bind(&previous_signer)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE extension_version SET signer_fingerprint = $1 WHERE content_hash = $2")
            .bind(checked.signer.as_str())
            .bind(hash.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            extension_id = %existing.extension_id,
            version = %existing.version,
            content_hash = %hash,
            signer = %checked.signer,
            previous_signer,
            "bundle signed again; the previous signature is kept in its history"
        );
        Ok(())
    }

    /// The signatures `hash` carried before it was signed again, oldest first.
    pub async fn signature_history(
        &self,
        hash: &ContentHash,
    ) -> Result<Vec<ReplacedSignature>, RegistryError> {
        let rows = sqlx::query(
            "SELECT signature, signer_fingerprint, replaced_at FROM bundle_signature_history \
             WHERE content_hash = $1 ORDER BY replaced_at, id",
        )
        .bind(hash.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ReplacedSignature {
                    signature: row.try_get("signature")?,
                    signer_fingerprint: row.try_get("signer_fingerprint")?,
                    replaced_at_ms: row.try_get("replaced_at")?,
                })
            })
            .collect()
    }

    /// Refuses a manifest whose publisher differs from the one the id is registered to.
    async fn check_publisher(&self, manifest: &Manifest) -> Result<(), PublishError> {
        let registered: Option<String> =
            sqlx::query_scalar("SELECT publisher FROM extension_registry WHERE id = $1")
                .bind(&manifest.id)
                .fetch_optional(&self.pool)
                .await?;
        match registered {
            Some(registered) => same_publisher(manifest, registered),
            None => Ok(()),
        }
    }

    /// Stores a bundle and its signature in the object store (create-only, content
    /// addressed) and returns their keys.
    async fn store_objects(
        &self,
        hash: &ContentHash,
        bundle: &[u8],
        signature: &[u8],
    ) -> Result<ObjectKeys, RegistryError> {
        Ok(ObjectKeys {
            bundle: self.objects.put_bundle(hash, bundle).await?,
            signature: self.objects.put_signature(signature).await?,
        })
    }

    /// Writes the registry, bundle and version rows in one transaction.
    async fn insert_version(
        &self,
        checked: &CheckedBundle,
        size: usize,
        keys: &ObjectKeys,
    ) -> Result<PublishedVersion, PublishError> {
        let manifest = &checked.manifest;
        let hash = checked.content_hash;
        let version_id = uuid::Uuid::new_v4().to_string();
        let capabilities_json = json(&manifest.capabilities, "manifest capabilities")?;
        let imports_json = json(&checked.imports, "component imports")?;
        let now = now_millis();

        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        // Returns the publisher on record, which a concurrent first publish may have set.
        let registered: String = sqlx::query_scalar(
            "INSERT INTO extension_registry (id, name, publisher, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name \
             RETURNING publisher",
        )
        .bind(&manifest.id)
        .bind(&manifest.name)
        .bind(&manifest.publisher)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        same_publisher(manifest, registered)?;
        // The row upsert above holds the id's row lock (PostgreSQL) or the write lock
        // (SQLite), so concurrent first publishes by two keys cannot both claim the id.
        if Registry::check_signer(&mut *tx, manifest, &checked.signer).await?
            == SignerCheck::FirstPublish
        {
            sqlx::query(
                "INSERT INTO extension_signer (extension_id, fingerprint, source, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&manifest.id)
            .bind(checked.signer.as_str())
            .bind(SOURCE_FIRST_PUBLISH)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO extension_bundle (content_hash, object_key, signature_key, size_bytes, \
             created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (content_hash) DO NOTHING",
        )
        .bind(hash.to_string())
        .bind(&keys.bundle)
        .bind(&keys.signature)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO extension_version (id, extension_id, version, content_hash, \
             manifest_json, capabilities_json, component_imports_json, signer_fingerprint, \
             published_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&version_id)
        .bind(&manifest.id)
        .bind(manifest.version.to_string())
        .bind(hash.to_string())
        .bind(&checked.manifest_json)
        .bind(&capabilities_json)
        .bind(&imports_json)
        .bind(checked.signer.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        Ok(PublishedVersion {
            version_id,
            extension_id: manifest.id.clone(),
            version: manifest.version.to_string(),
            content_hash: hash,
        })
    }

    /// The published version `version` of `extension_id`, if any.
    async fn published_version(
        &self,
        extension_id: &str,
        version: &str,
    ) -> Result<Option<PublishedVersion>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, content_hash FROM extension_version \
             WHERE extension_id = $1 AND version = $2",
        )
        .bind(extension_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let version_id: String = row.try_get("id")?;
        let content_hash = parse_hash(&version_id, &row.try_get::<String, _>("content_hash")?)?;
        Ok(Some(PublishedVersion {
            version_id,
            extension_id: extension_id.to_owned(),
            version: version.to_owned(),
            content_hash,
        }))
    }

    /// The manifest of `extension_id`'s version whose bundle is `hash`, if it has one:
    /// what the runner checks before serving the version's UI.
    pub async fn version_manifest(
        &self,
        extension_id: &str,
        hash: &ContentHash,
    ) -> Result<Option<Manifest>, RegistryError> {
        let row = sqlx::query(
            "SELECT id, manifest_json FROM extension_version \
             WHERE extension_id = $1 AND content_hash = $2",
        )
        .bind(extension_id)
        .bind(hash.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let version_id: String = row.try_get("id")?;
        let manifest_json: String = row.try_get("manifest_json")?;
        let manifest = crate::error::stored_manifest(&version_id, &manifest_json)?;
        Ok(Some(manifest))
    }

    /// Every published extension, by id.
    pub async fn list_extensions(&self) -> Result<Vec<ExtensionSummary>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, name, publisher, created_at FROM extension_registry ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let versions = sqlx::query("SELECT id, extension_id, version FROM extension_version")
            .fetch_all(&self.pool)
            .await?;
        // extension id -> (is a release, version), the highest seen so far.
        let mut latest: HashMap<String, (bool, semver::Version)> = HashMap::new();
        for row in versions {
            let version_id: String = row.try_get("id")?;
            let parsed = parse_version(&version_id, &row.try_get::<String, _>("version")?)?;
            let candidate = (parsed.pre.is_empty(), parsed);
            let extension_id: String = row.try_get("extension_id")?;
            match latest.get_mut(&extension_id) {
                Some(best) if *best >= candidate => {}
                Some(best) => *best = candidate,
                None => {
                    latest.insert(extension_id, candidate);
                }
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            out.push(ExtensionSummary {
                name: row.try_get("name")?,
                publisher: row.try_get("publisher")?,
                latest_version: latest.remove(&id).map(|(_, v)| v.to_string()),
                created_at_ms: row.try_get("created_at")?,
                id,
            });
        }
        Ok(out)
    }

    /// The published versions of `extension_id`, newest first (releases before
    /// pre-releases). Empty when the extension is unknown.
    pub async fn list_versions(
        &self,
        extension_id: &str,
    ) -> Result<Vec<VersionSummary>, RegistryError> {
        let rows = sqlx::query(
            "SELECT id, version, content_hash, capabilities_json, signer_fingerprint, \
             published_at, manifest_json FROM extension_version WHERE extension_id = $1",
        )
        .bind(extension_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let version_id: String = row.try_get("id")?;
            let version: String = row.try_get("version")?;
            let parsed = parse_version(&version_id, &version)?;
            let capabilities: Capabilities = serde_json::from_str(
                &row.try_get::<String, _>("capabilities_json")?,
            )
            .map_err(|e| {
                RegistryError::corrupt("extension_version", "capabilities_json", &version_id, e)
            })?;
            let summary = VersionSummary {
                content_hash: parse_hash(&version_id, &row.try_get::<String, _>("content_hash")?)?,
                extension_id: extension_id.to_owned(),
                version,
                requested: capabilities.keys(),
                signer_fingerprint: row.try_get("signer_fingerprint")?,
                published_at_ms: row.try_get("published_at")?,
                ui_entry: crate::error::stored_manifest(
                    &version_id,
                    &row.try_get::<String, _>("manifest_json")?,
                )?
                .ui
                .map(|ui| ui.entry),
                version_id,
            };
            out.push(((parsed.pre.is_empty(), parsed), summary));
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().map(|(_, summary)| summary).collect())
    }
}

/// Refuses `manifest` unless it names the `registered` publisher.
fn same_publisher(manifest: &Manifest, registered: String) -> Result<(), PublishError> {
    if registered == manifest.publisher {
        Ok(())
    } else {
        Err(PublishError::PublisherMismatch {
            extension_id: manifest.id.clone(),
            registered,
            manifest: manifest.publisher.clone(),
        })
    }
}

fn parse_version(version_id: &str, text: &str) -> Result<semver::Version, RegistryError> {
    semver::Version::parse(text)
        .map_err(|e| RegistryError::corrupt("extension_version", "version", version_id, e))
}

fn parse_hash(version_id: &str, text: &str) -> Result<ContentHash, RegistryError> {
    text.parse()
        .map_err(|e| RegistryError::corrupt("extension_version", "content_hash", version_id, e))
}

fn json<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(|source| RegistryError::Encode { what, source })
}

/// Where a bundle and its signature were stored.
struct ObjectKeys {
    bundle: String,
    signature: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::{
        EMPTY_COMPONENT, Fixture, STORAGE_COMPONENT, bundle, files_below, manifest, manifest_with,
    };
    use palisade_bundle::signing::SigningKey;
    use sha2::Digest as _;

    const ID: &str = "com.example.hello";

    /// Asserts that nothing was stored: no object, no row.
    async fn assert_nothing_stored(fx: &Fixture) {
        assert!(files_below(&fx.objects_dir()).is_empty());
        for table in [
            "extension_registry",
            "extension_version",
            "extension_bundle",
        ] {
            assert_eq!(fx.count(table).await, 0, "{table}");
        }
    }

    #[tokio::test]
    async fn publish_stores_blob_signature_and_rows() {
        let fx = Fixture::new().await;
        let bytes = bundle(
            &manifest(ID, "1.0.0", json!({"log": true})),
            EMPTY_COMPONENT,
        );
        let signature = fx.key.sign(&bytes).unwrap();
        let published = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap();

        assert_eq!(published.extension_id, ID);
        assert_eq!(published.version, "1.0.0");
        assert_eq!(published.content_hash, ContentHash::of(&bytes));

        let hex = published.content_hash.hex();
        let objects = fx.objects_dir().join("bundles");
        assert_eq!(
            std::fs::read(objects.join(format!("{hex}.tar.zst"))).unwrap(),
            bytes
        );
        let signatures = fx.objects_dir().join("signatures");
        let sig_hex = hex::encode(sha2::Sha256::digest(&signature));
        assert_eq!(
            std::fs::read(signatures.join(format!("{sig_hex}.sig"))).unwrap(),
            signature
        );
        let (blob, sig) = fx
            .registry
            .bundle_bytes(&published.content_hash)
            .await
            .unwrap();
        assert_eq!((blob, sig), (bytes.clone(), signature));

        let versions = fx.registry.list_versions(ID).await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].version_id, published.version_id);
        assert_eq!(versions[0].requested, vec![CapabilityKey::Log]);
        assert_eq!(
            versions[0].signer_fingerprint,
            fx.key.public_key().fingerprint().as_str()
        );

        let extensions = fx.registry.list_extensions().await.unwrap();
        assert_eq!(extensions.len(), 1);
        assert_eq!(extensions[0].id, ID);
        assert_eq!(extensions[0].publisher, "Example Inc.");
        assert_eq!(extensions[0].latest_version.as_deref(), Some("1.0.0"));

        let size: i64 = sqlx::query_scalar("SELECT size_bytes FROM extension_bundle")
            .fetch_one(fx.registry.pool())
            .await
            .unwrap();
        assert_eq!(size, bytes.len() as i64);
    }

    #[tokio::test]
    async fn base64_signatures_are_accepted() {
        use base64::Engine as _;
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(fx.key.sign(&bytes).unwrap()) + "\n";
        fx.registry
            .publish(&bytes, signature.as_bytes(), &fx.trust)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn tampered_bundle_is_refused_before_anything_is_stored() {
        let fx = Fixture::new().await;
        let mut bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let signature = fx.key.sign(&bytes).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;

        let err = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Signature(_)), "{err:?}");
        assert!(err.to_string().contains("signature"), "{err}");
        assert_nothing_stored(&fx).await;
    }

    #[tokio::test]
    async fn untrusted_key_is_refused() {
        let fx = Fixture::new().await;
        let stranger = SigningKey::generate().unwrap();
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let signature = stranger.sign(&bytes).unwrap();

        let err = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Signature(_)), "{err:?}");
        assert_nothing_stored(&fx).await;
    }

    #[tokio::test]
    async fn signed_garbage_is_refused_as_an_archive() {
        let fx = Fixture::new().await;
        let bytes = b"definitely not a tar.zst".to_vec();
        let signature = fx.key.sign(&bytes).unwrap();
        let err = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Archive(_)), "{err:?}");
        assert!(err.to_string().contains("tar.zst"), "{err}");
        assert_nothing_stored(&fx).await;
    }

    #[tokio::test]
    async fn ungranted_import_is_refused_naming_interface_and_grant() {
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), STORAGE_COMPONENT);
        let signature = fx.key.sign(&bytes).unwrap();
        let err = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap_err();
        match &err {
            PublishError::Imports(palisade_bundle::imports::ImportError::NotGranted {
                interface,
                grant,
            }) => {
                assert_eq!(interface, "palisade:extension/storage@0.1.0");
                assert_eq!(*grant, CapabilityKey::Storage);
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("palisade:extension/storage@0.1.0"), "{text}");
        assert!(text.contains("capabilities.storage"), "{text}");
        assert_nothing_stored(&fx).await;
    }

    #[tokio::test]
    async fn granted_import_is_accepted_and_recorded() {
        let fx = Fixture::new().await;
        let caps = json!({"storage": {"namespaces": ["notes"]}});
        let bytes = bundle(&manifest(ID, "1.0.0", caps), STORAGE_COMPONENT);
        let published = fx.publish(&bytes).await;
        let imports: String = sqlx::query_scalar(
            "SELECT component_imports_json FROM extension_version WHERE id = $1",
        )
        .bind(&published.version_id)
        .fetch_one(fx.registry.pool())
        .await
        .unwrap();
        assert_eq!(imports, r#"["palisade:extension/storage@0.1.0"]"#);
    }

    #[tokio::test]
    async fn republishing_the_same_bundle_is_idempotent() {
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let first = fx.publish(&bytes).await;
        let second = fx.publish(&bytes).await;
        assert_eq!(first, second);
        assert_eq!(fx.count("extension_version").await, 1);
        assert_eq!(fx.count("extension_bundle").await, 1);
    }

    #[tokio::test]
    async fn republishing_restores_a_lost_blob() {
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let published = fx.publish(&bytes).await;
        let blob = fx
            .objects_dir()
            .join(format!("bundles/{}.tar.zst", published.content_hash.hex()));
        std::fs::remove_file(&blob).unwrap();
        fx.publish(&bytes).await;
        assert_eq!(std::fs::read(&blob).unwrap(), bytes);
    }

    #[tokio::test]
    async fn same_version_with_other_bytes_is_a_conflict() {
        let fx = Fixture::new().await;
        let original = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let first = fx.publish(&original).await;

        let changed = manifest_with(ID, "1.0.0", json!({}), |m| m["name"] = json!("Renamed"));
        let other = bundle(&changed, EMPTY_COMPONENT);
        let signature = fx.key.sign(&other).unwrap();
        let err = fx
            .registry
            .publish(&other, &signature, &fx.trust)
            .await
            .unwrap_err();
        match &err {
            PublishError::VersionExists {
                extension_id,
                version,
                existing,
                attempted,
            } => {
                assert_eq!(extension_id, ID);
                assert_eq!(version, "1.0.0");
                assert_eq!(existing, &first.content_hash.to_string());
                assert_eq!(attempted, &ContentHash::of(&other).to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("already published"), "{err}");
        // The first version is untouched and the new blob was not stored.
        assert_eq!(
            fx.registry.list_versions(ID).await.unwrap()[0].version_id,
            first.version_id
        );
        assert_eq!(files_below(&fx.objects_dir()).len(), 2);
    }

    #[tokio::test]
    async fn another_publisher_cannot_take_over_an_id() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        let hijack = manifest_with(ID, "1.0.1", json!({}), |m| {
            m["publisher"] = json!("Mallory")
        });
        let bytes = bundle(&hijack, EMPTY_COMPONENT);
        let signature = fx.key.sign(&bytes).unwrap();
        let err = fx
            .registry
            .publish(&bytes, &signature, &fx.trust)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::PublisherMismatch { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Mallory"), "{err}");
        assert_eq!(fx.count("extension_version").await, 1);
    }

    #[tokio::test]
    async fn another_trusted_key_cannot_publish_an_owned_id_until_the_operator_allows_it() {
        let fx = Fixture::new().await;
        let first = fx.publish_simple(ID, "1.0.0", json!({})).await;
        // A second key that the operator trusts (for other extensions) ...
        let other = SigningKey::generate().unwrap();
        let trust = TrustBundle::from_keys(vec![
            fx.key.public_key().clone(),
            other.public_key().clone(),
        ])
        .unwrap();
        // ... signs a new version of the id, naming the same publisher.
        let bytes = bundle(
            &manifest(
                ID,
                "1.0.1",
                json!({"http": {"allow": ["https://evil.example"]}}),
            ),
            EMPTY_COMPONENT,
        );
        let signature = other.sign(&bytes).unwrap();
        let err = fx
            .registry
            .publish(&bytes, &signature, &trust)
            .await
            .unwrap_err();
        let owner = fx.key.public_key().fingerprint();
        let signer = other.public_key().fingerprint();
        match &err {
            PublishError::SignerNotAllowed {
                extension_id,
                allowed,
                signer: refused,
            } => {
                assert_eq!(extension_id, ID);
                assert_eq!(allowed, &[owner.to_string()]);
                assert_eq!(refused, signer.as_str());
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(owner.as_str()), "{text}");
        assert!(text.contains(signer.as_str()), "{text}");
        assert_eq!(fx.count("extension_version").await, 1);
        // Nothing of the refused bundle was stored.
        assert_eq!(files_below(&fx.objects_dir()).len(), 2);
        assert_eq!(
            fx.registry.list_versions(ID).await.unwrap()[0].version_id,
            first.version_id
        );

        // The operator allows the second key for this id: now it may publish.
        assert!(fx.registry.allow_signer(ID, &signer).await.unwrap());
        assert!(!fx.registry.allow_signer(ID, &signer).await.unwrap());
        fx.registry
            .publish(&bytes, &signature, &trust)
            .await
            .unwrap();
        let signers: Vec<(String, String)> = fx
            .registry
            .extension_signers(ID)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.fingerprint, s.source))
            .collect();
        assert_eq!(signers.len(), 2);
        assert!(signers.contains(&(owner.to_string(), "first-publish".to_owned())));
        assert!(signers.contains(&(signer.to_string(), "operator".to_owned())));

        // Withdrawn again, the key is refused again.
        assert!(fx.registry.disallow_signer(ID, &signer).await.unwrap());
        let next = bundle(&manifest(ID, "1.0.2", json!({})), EMPTY_COMPONENT);
        let err = fx
            .registry
            .publish(&next, &other.sign(&next).unwrap(), &trust)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::SignerNotAllowed { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_id_reserved_for_a_key_refuses_the_first_publish_of_another() {
        let fx = Fixture::new().await;
        let owner = SigningKey::generate().unwrap();
        fx.registry
            .allow_signer(ID, &owner.public_key().fingerprint())
            .await
            .unwrap();
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let err = fx
            .registry
            .publish(&bytes, &fx.key.sign(&bytes).unwrap(), &fx.trust)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::SignerNotAllowed { .. }),
            "{err:?}"
        );
        assert_nothing_stored(&fx).await;

        let err = fx
            .registry
            .allow_signer("Not An Id", &owner.public_key().fingerprint())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`Not An Id`"), "{err}");
    }

    #[tokio::test]
    async fn a_bundle_whose_key_was_removed_is_signed_again_and_the_old_signature_kept() {
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let old_signature = fx.key.sign(&bytes).unwrap();
        let published = fx
            .registry
            .publish(&bytes, &old_signature, &fx.trust)
            .await
            .unwrap();
        let old_key = fx.key.public_key().fingerprint();

        // The first key is removed; the operator trusts a new one for this id.
        let new_key = SigningKey::generate().unwrap();
        let new_fp = new_key.public_key().fingerprint();
        fx.registry.untrust_key(&old_key).await.unwrap();
        fx.registry.trust_key(new_key.public_key()).await.unwrap();
        fx.registry.allow_signer(ID, &new_fp).await.unwrap();
        let trust = fx.registry.trust_set().await.unwrap();

        let new_signature = new_key.sign(&bytes).unwrap();
        let again = fx
            .registry
            .publish(&bytes, &new_signature, &trust)
            .await
            .unwrap();
        assert_eq!(again, published);
        // The new signature is the stored one and verifies against the trust set now.
        let (_, stored) = fx
            .registry
            .bundle_bytes(&published.content_hash)
            .await
            .unwrap();
        assert_eq!(stored, new_signature);
        assert_eq!(trust.verify(&bytes, &stored).unwrap(), new_fp);
        assert_eq!(
            fx.registry.list_versions(ID).await.unwrap()[0].signer_fingerprint,
            new_fp.as_str()
        );
        // The old one is kept in the history.
        let history = fx
            .registry
            .signature_history(&published.content_hash)
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].signature, old_signature);
        assert_eq!(history[0].signer_fingerprint, old_key.as_str());
        // Still one version; the install now verifies.
        assert_eq!(fx.count("extension_version").await, 1);
        fx.registry
            .install("acme", ID, None, &[CapabilityKey::Log], Default::default())
            .await
            .unwrap();

        // Publishing again with the same key changes nothing.
        fx.registry
            .publish(&bytes, &new_key.sign(&bytes).unwrap(), &trust)
            .await
            .unwrap();
        assert_eq!(
            fx.registry
                .signature_history(&published.content_hash)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn signing_again_needs_a_key_allowed_for_the_id() {
        let fx = Fixture::new().await;
        let bytes = bundle(&manifest(ID, "1.0.0", json!({})), EMPTY_COMPONENT);
        let published = fx.publish(&bytes).await;
        let stranger = SigningKey::generate().unwrap();
        fx.registry.trust_key(stranger.public_key()).await.unwrap();
        let trust = fx.registry.trust_set().await.unwrap();
        let err = fx
            .registry
            .publish(&bytes, &stranger.sign(&bytes).unwrap(), &trust)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::SignerNotAllowed { .. }),
            "{err:?}"
        );
        assert!(
            fx.registry
                .signature_history(&published.content_hash)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn versions_are_listed_newest_release_first() {
        let fx = Fixture::new().await;
        for v in ["1.0.0", "1.10.0", "2.0.0-beta.1", "1.2.0"] {
            fx.publish_simple(ID, v, json!({})).await;
        }
        let listed: Vec<String> = fx
            .registry
            .list_versions(ID)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(listed, ["1.10.0", "1.2.0", "1.0.0", "2.0.0-beta.1"]);
        let ext = fx.registry.list_extensions().await.unwrap();
        assert_eq!(ext[0].latest_version.as_deref(), Some("1.10.0"));
        assert!(
            fx.registry
                .list_versions("com.example.none")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_removed_object_is_bundle_missing() {
        let fx = Fixture::new().await;
        let published = fx.publish_simple(ID, "1.0.0", json!({})).await;
        let hex = published.content_hash.hex();
        std::fs::remove_file(fx.objects_dir().join(format!("bundles/{hex}.tar.zst"))).unwrap();
        let err = fx
            .registry
            .bundle_bytes(&published.content_hash)
            .await
            .unwrap_err();
        match &err {
            RegistryError::BundleMissing { hash, key } => {
                assert_eq!(hash, &published.content_hash.to_string());
                assert_eq!(key, &format!("bundles/{hex}.tar.zst"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("missing"), "{err}");

        let unknown = ContentHash::of(b"never published");
        assert!(matches!(
            fx.registry.bundle_bytes(&unknown).await,
            Err(RegistryError::BundleMissing { .. })
        ));
    }
}
