//! Precompiled artifacts: native code the platform itself produced with
//! `Engine::precompile_component`, keyed by content hash **and** the engine's
//! compatibility hash, kept on local disk and in a shared store so that later loads and
//! other runner processes deserialize instead of compiling.
//!
//! Deserializing native code is only sound for bytes this platform produced for a
//! compatible engine. Every artifact is therefore sealed with an HMAC-SHA256 under the
//! operator's artifact key, over the content hash, the engine hash and the bytes; an
//! artifact whose seal does not verify is ignored (and recompiled), so nothing written into
//! the store by anyone without the key is ever deserialized. A bundle's own native code is
//! never loaded: only the component's wasm is ever compiled.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const MAC_LEN: usize = 32;

/// A shared store of sealed artifacts (the registry's object store in production).
pub trait ArtifactStore: Send + Sync + 'static {
    /// The sealed artifact stored under `key`, if any. Failures read as absent.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>>;
    /// Stores a sealed artifact under `key`. Failures are logged, never fatal.
    fn put<'a>(&'a self, key: &'a str, sealed: Vec<u8>) -> BoxFuture<'a, ()>;
}

/// The operator's key that seals artifacts; every runner sharing a store needs the same.
#[derive(Clone)]
pub struct ArtifactKey([u8; 32]);

impl ArtifactKey {
    /// A key from 32 bytes of secret material.
    pub fn new(bytes: [u8; 32]) -> Self {
        ArtifactKey(bytes)
    }

    fn mac(&self, content_hash: &str, engine_hash: &str, bytes: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(content_hash.as_bytes());
        mac.update(b"\n");
        mac.update(engine_hash.as_bytes());
        mac.update(b"\n");
        mac.update(bytes);
        mac
    }

    /// `mac || bytes`.
    pub(crate) fn seal(&self, content_hash: &str, engine_hash: &str, bytes: &[u8]) -> Vec<u8> {
        let tag = self
            .mac(content_hash, engine_hash, bytes)
            .finalize()
            .into_bytes();
        let mut sealed = Vec::with_capacity(MAC_LEN + bytes.len());
        sealed.extend_from_slice(&tag);
        sealed.extend_from_slice(bytes);
        sealed
    }

    /// The artifact bytes if the seal verifies for this content and engine hash.
    pub(crate) fn open<'a>(
        &self,
        content_hash: &str,
        engine_hash: &str,
        sealed: &'a [u8],
    ) -> Option<&'a [u8]> {
        if sealed.len() < MAC_LEN {
            return None;
        }
        let (tag, bytes) = sealed.split_at(MAC_LEN);
        self.mac(content_hash, engine_hash, bytes)
            .verify_slice(tag)
            .ok()
            .map(|()| bytes)
    }
}

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArtifactKey(..)")
    }
}

/// Where artifacts are cached: local disk and/or a shared store, sealed with `key`.
#[derive(Clone)]
pub struct Artifacts {
    /// Local directory cache (created on first write).
    pub local_dir: Option<PathBuf>,
    /// Shared store (e.g. the registry's object store).
    pub remote: Option<Arc<dyn ArtifactStore>>,
    /// The sealing key.
    pub key: ArtifactKey,
}

impl Artifacts {
    /// The object name of an artifact.
    pub fn object_key(content_hash: &str, engine_hash: &str) -> String {
        let hex = content_hash.strip_prefix("sha256:").unwrap_or(content_hash);
        format!("artifacts/{hex}-{engine_hash}.cwasm")
    }

    /// A sealed artifact from local disk, then the shared store (copied to disk on a hit).
    pub(crate) async fn load(&self, content_hash: &str, engine_hash: &str) -> Option<Vec<u8>> {
        let key = Self::object_key(content_hash, engine_hash);
        if let Some(dir) = &self.local_dir {
            let path = dir.join(&key);
            if let Ok(sealed) = tokio::fs::read(&path).await {
                if self.key.open(content_hash, engine_hash, &sealed).is_some() {
                    return Some(sealed);
                }
                tracing::warn!(path = %path.display(), "ignoring a local artifact whose seal does not verify");
            }
        }
        let remote = self.remote.as_ref()?;
        let sealed = remote.get(&key).await?;
        if self.key.open(content_hash, engine_hash, &sealed).is_none() {
            tracing::warn!(%key, "ignoring a stored artifact whose seal does not verify");
            return None;
        }
        self.write_local(&key, &sealed).await;
        Some(sealed)
    }

    /// Seals and stores a fresh artifact locally and in the shared store.
    pub(crate) async fn store(&self, content_hash: &str, engine_hash: &str, bytes: &[u8]) {
        let key = Self::object_key(content_hash, engine_hash);
        let sealed = self.key.seal(content_hash, engine_hash, bytes);
        self.write_local(&key, &sealed).await;
        if let Some(remote) = &self.remote {
            remote.put(&key, sealed).await;
        }
    }

    async fn write_local(&self, key: &str, sealed: &[u8]) {
        let Some(dir) = &self.local_dir else { return };
        let path = dir.join(key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = async {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(&tmp, sealed).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not cache an artifact on disk");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_bind_key_hashes_and_bytes() {
        let key = ArtifactKey::new([7; 32]);
        let sealed = key.seal("sha256:aa", "e1", b"code");
        assert_eq!(key.open("sha256:aa", "e1", &sealed), Some(&b"code"[..]));
        assert_eq!(key.open("sha256:bb", "e1", &sealed), None);
        assert_eq!(key.open("sha256:aa", "e2", &sealed), None);
        assert_eq!(
            ArtifactKey::new([8; 32]).open("sha256:aa", "e1", &sealed),
            None
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("sha256:aa", "e1", &tampered), None);
        assert_eq!(key.open("sha256:aa", "e1", b"short"), None);
    }
}
