//! The object store holding bundle blobs and their detached signatures.
//!
//! Objects are content-addressed: `bundles/<hex>.tar.zst` and `bundles/<hex>.sig`, where
//! `<hex>` is the SHA-256 of the bundle bytes.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use palisade_bundle::hash::ContentHash;

use crate::error::RegistryError;

/// Bundle blobs and signatures in any [`ObjectStore`].
#[derive(Clone, Debug)]
pub struct BundleStore {
    store: Arc<dyn ObjectStore>,
}

impl BundleStore {
    /// Wraps an existing object store (S3, in-memory, ...).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// A store rooted at the local directory `dir`, created if missing.
    pub fn local(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(store)))
    }

    /// The underlying object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Key of the bundle blob with content hash `hash`.
    pub fn bundle_key(hash: &ContentHash) -> String {
        format!("bundles/{}.tar.zst", hash.hex())
    }

    /// Key of the detached signature of the bundle with content hash `hash`.
    pub fn signature_key(hash: &ContentHash) -> String {
        format!("bundles/{}.sig", hash.hex())
    }

    /// Stores a bundle and its signature.
    ///
    /// The blob is content-addressed, so rewriting it is harmless. The signature is written
    /// only if none is stored yet: an accepted signature for given bytes stays until it is
    /// replaced with [`BundleStore::replace_signature`].
    pub async fn put(
        &self,
        hash: &ContentHash,
        bundle: &[u8],
        signature: &[u8],
    ) -> Result<(), RegistryError> {
        let bundle_key = ObjectPath::from(Self::bundle_key(hash));
        self.store
            .put(&bundle_key, PutPayload::from(bundle.to_vec()))
            .await?;

        let sig_key = ObjectPath::from(Self::signature_key(hash));
        let create = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&sig_key, PutPayload::from(signature.to_vec()), create)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces the signature stored for `hash` (a bundle signed again).
    pub async fn replace_signature(
        &self,
        hash: &ContentHash,
        signature: &[u8],
    ) -> Result<(), RegistryError> {
        let sig_key = ObjectPath::from(Self::signature_key(hash));
        self.store
            .put(&sig_key, PutPayload::from(signature.to_vec()))
            .await?;
        Ok(())
    }

    /// Reads the bundle and signature stored for `hash`.
    pub async fn get(&self, hash: &ContentHash) -> Result<(Vec<u8>, Vec<u8>), RegistryError> {
        let bundle = self.read(hash, Self::bundle_key(hash)).await?;
        let signature = self.read(hash, Self::signature_key(hash)).await?;
        Ok((bundle, signature))
    }

    async fn read(&self, hash: &ContentHash, key: String) -> Result<Vec<u8>, RegistryError> {
        let path = ObjectPath::from(key.as_str());
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::BundleMissing {
                    hash: hash.to_string(),
                    key,
                });
            }
            Err(err) => return Err(err.into()),
        };
        Ok(result.bytes().await?.to_vec())
    }
}
