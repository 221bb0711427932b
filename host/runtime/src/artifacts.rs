//! Precompiled artifacts: native code the platform itself produced with
//! `Engine::precompile_component`, keyed by content hash **and** the engine's
//! compatibility hash, so that later loads deserialize instead of compiling.
//!
//! Deserializing native code is only sound for bytes this platform produced for a
//! compatible engine, so a runner loads native code only from a source it trusts:
//!
//! * **Its own local cache** (`local_dir`): what this runner compiled itself, sealed with
//!   HMAC-SHA256 under its own [`ArtifactKey`] over the content hash, the engine hash and
//!   the bytes. The key and the directory belong to this runner (its data directory); they
//!   are never shared with other runners.
//! * **The shared store** (`remote`), only for artifacts signed (Ed25519, over the content
//!   hash, the engine hash and the SHA-256 of the bytes) by the operator's
//!   [`ArtifactSigningKey`]. Runners hold only its public half ([`ArtifactVerifyingKey`]),
//!   so they cannot sign: a runner never writes to the shared store, and one that can write
//!   there anyway (the store is shared) cannot plant code that other runners load. Only a
//!   process holding the signing key — `palisade publish --precompile`, the operator's
//!   step — stores artifacts there.
//!
//! An artifact whose seal or signature does not verify is ignored and the component
//! compiled. A bundle's own native code is never loaded: only the component's wasm is
//! ever compiled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;
const MAC_LEN: usize = 32;
const SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// Domain separation of the signed message of a shared artifact.
const SIGNATURE_CONTEXT: &[u8] = b"palisade:precompiled-artifact:v1\n";

/// A shared store of signed artifacts (the registry's object store in production).
pub trait ArtifactStore: Send + Sync + 'static {
    /// The signed artifact stored under `key`, if any. Failures read as absent.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>>;
    /// Stores a signed artifact under `key`. Failures are logged, never fatal.
    fn put<'a>(&'a self, key: &'a str, signed: Vec<u8>) -> BoxFuture<'a, ()>;
}

/// A runner's own key that seals its local artifact cache. Never shared between runners.
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

/// Why an artifact signing or verifying key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactKeyError {
    /// The text is not an Ed25519 private key in PKCS#8 PEM.
    #[error("not an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`)")]
    PrivateKey,
    /// The text is not an Ed25519 public key in SPKI PEM.
    #[error("not an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`)")]
    PublicKey,
    /// Encoding a key as PEM failed.
    #[error("encoding the key as PEM failed")]
    Encode,
}

/// The message an artifact signature covers: a context tag, the content hash, the engine
/// hash and the SHA-256 of the bytes.
fn signed_message(content_hash: &str, engine_hash: &str, bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 128);
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(content_hash.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(engine_hash.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(&Sha256::digest(bytes));
    message
}

/// The operator's Ed25519 key that signs artifacts for the shared store. Runners never
/// hold it. `Debug` shows the public key's fingerprint only.
#[derive(Clone)]
pub struct ArtifactSigningKey(ed25519_dalek::SigningKey);

impl ArtifactSigningKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        ArtifactSigningKey(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, ArtifactKeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(ArtifactSigningKey)
            .map_err(|_| ArtifactKeyError::PrivateKey)
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, ArtifactKeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| Zeroizing::new(pem.to_string()))
            .map_err(|_| ArtifactKeyError::Encode)
    }

    /// The public half, which runners trust.
    pub fn verifying_key(&self) -> ArtifactVerifyingKey {
        ArtifactVerifyingKey(self.0.verifying_key())
    }

    /// `signature || bytes`.
    pub(crate) fn sign(&self, content_hash: &str, engine_hash: &str, bytes: &[u8]) -> Vec<u8> {
        let signature = self
            .0
            .sign(&signed_message(content_hash, engine_hash, bytes));
        let mut signed = Vec::with_capacity(SIGNATURE_LEN + bytes.len());
        signed.extend_from_slice(&signature.to_bytes());
        signed.extend_from_slice(bytes);
        signed
    }
}

impl std::fmt::Debug for ArtifactSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArtifactSigningKey")
            .field(&self.verifying_key().fingerprint())
            .finish()
    }
}

/// The public half of the operator's [`ArtifactSigningKey`]: artifacts in the shared store
/// load only with a valid signature by it.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactVerifyingKey(ed25519_dalek::VerifyingKey);

impl ArtifactVerifyingKey {
    /// Reads an SPKI PEM public key.
    pub fn from_pem(pem: &str) -> Result<Self, ArtifactKeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(ArtifactVerifyingKey)
            .map_err(|_| ArtifactKeyError::PublicKey)
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> Result<String, ArtifactKeyError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| ArtifactKeyError::Encode)
    }

    /// `sha256:<hex>` of the raw public key, for logs.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// The artifact bytes if the signature verifies for this content and engine hash.
    pub(crate) fn verify<'a>(
        &self,
        content_hash: &str,
        engine_hash: &str,
        signed: &'a [u8],
    ) -> Option<&'a [u8]> {
        if signed.len() < SIGNATURE_LEN {
            return None;
        }
        let (signature, bytes) = signed.split_at(SIGNATURE_LEN);
        let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
        self.0
            .verify(
                &signed_message(content_hash, engine_hash, bytes),
                &signature,
            )
            .ok()
            .map(|()| bytes)
    }
}

impl std::fmt::Debug for ArtifactVerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArtifactVerifyingKey")
            .field(&self.fingerprint())
            .finish()
    }
}

/// Where artifacts are cached: this runner's own directory and the shared store.
#[derive(Clone)]
pub struct Artifacts {
    /// This runner's own cache directory (the CLI creates it at start; created on write too).
    pub local_dir: Option<PathBuf>,
    /// The shared store (e.g. the registry's object store): read for artifacts signed by
    /// `trusted`, written only with `signer`.
    pub remote: Option<Arc<dyn ArtifactStore>>,
    /// The key that seals the local cache: this runner's own.
    pub key: ArtifactKey,
    /// The public key whose signature makes a shared artifact loadable; `None`: artifacts
    /// of the shared store are never loaded.
    pub trusted: Option<ArtifactVerifyingKey>,
    /// The operator's signing key, for the process that stores artifacts in the shared
    /// store (`palisade publish --precompile`); runners have `None` and write nothing there.
    pub signer: Option<ArtifactSigningKey>,
}

impl Artifacts {
    /// The object name of an artifact.
    pub fn object_key(content_hash: &str, engine_hash: &str) -> String {
        let hex = content_hash.strip_prefix("sha256:").unwrap_or(content_hash);
        format!("artifacts/{hex}-{engine_hash}.cwasm")
    }

    /// Verified artifact bytes: from the local cache (sealed by this runner), then from the
    /// shared store (signed by the trusted key; copied into the local cache on a hit).
    pub(crate) async fn load(&self, content_hash: &str, engine_hash: &str) -> Option<Vec<u8>> {
        let key = Self::object_key(content_hash, engine_hash);
        if let Some(dir) = &self.local_dir {
            let path = dir.join(&key);
            if let Ok(sealed) = tokio::fs::read(&path).await {
                if let Some(bytes) = self.key.open(content_hash, engine_hash, &sealed) {
                    return Some(bytes.to_vec());
                }
                tracing::warn!(path = %path.display(), "ignoring a local artifact whose seal does not verify");
            }
        }
        let (remote, trusted) = (self.remote.as_ref()?, self.trusted.as_ref()?);
        let signed = remote.get(&key).await?;
        let Some(bytes) = trusted.verify(content_hash, engine_hash, &signed) else {
            tracing::warn!(%key, trusted = %trusted.fingerprint(), "ignoring a shared artifact without a valid signature by the artifact signing key");
            return None;
        };
        let bytes = bytes.to_vec();
        self.write_local(&key, &self.key.seal(content_hash, engine_hash, &bytes))
            .await;
        Some(bytes)
    }

    /// Stores a fresh artifact in the local cache, and — only with the signing key — signed
    /// in the shared store.
    pub(crate) async fn store(&self, content_hash: &str, engine_hash: &str, bytes: &[u8]) {
        let key = Self::object_key(content_hash, engine_hash);
        self.write_local(&key, &self.key.seal(content_hash, engine_hash, bytes))
            .await;
        if let (Some(remote), Some(signer)) = (&self.remote, &self.signer) {
            remote
                .put(&key, signer.sign(content_hash, engine_hash, bytes))
                .await;
        }
    }

    async fn write_local(&self, key: &str, sealed: &[u8]) {
        let Some(dir) = &self.local_dir else { return };
        let path = dir.join(key);
        let sealed = sealed.to_vec();
        let target = path.clone();
        // A temporary file of its own per write (not one name per process): concurrent first
        // loads of one component must not rename each other's file away.
        let result = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let parent = target.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".artifact-")
                .tempfile_in(parent)?;
            tmp.write_all(&sealed)?;
            tmp.persist(&target).map_err(|e| e.error)?;
            Ok::<(), std::io::Error>(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
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

    #[test]
    fn signatures_bind_key_hashes_and_bytes() {
        let signer = ArtifactSigningKey::generate();
        let trusted = signer.verifying_key();
        let signed = signer.sign("sha256:aa", "e1", b"code");
        assert_eq!(
            trusted.verify("sha256:aa", "e1", &signed),
            Some(&b"code"[..])
        );
        assert_eq!(trusted.verify("sha256:bb", "e1", &signed), None);
        assert_eq!(trusted.verify("sha256:aa", "e2", &signed), None);
        let stranger = ArtifactSigningKey::generate().verifying_key();
        assert_eq!(stranger.verify("sha256:aa", "e1", &signed), None);
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(trusted.verify("sha256:aa", "e1", &tampered), None);
        assert_eq!(trusted.verify("sha256:aa", "e1", b"short"), None);
        // An HMAC seal is not a signature, whatever key made it.
        let sealed = ArtifactKey::new([7; 32]).seal("sha256:aa", "e1", b"code");
        assert_eq!(trusted.verify("sha256:aa", "e1", &sealed), None);
    }

    #[test]
    fn keys_roundtrip_through_pem_and_bad_pem_is_named() {
        let signer = ArtifactSigningKey::generate();
        let again = ArtifactSigningKey::from_pem(&signer.to_pem().unwrap()).unwrap();
        assert_eq!(again.verifying_key(), signer.verifying_key());
        let public = signer.verifying_key().to_pem().unwrap();
        assert_eq!(
            ArtifactVerifyingKey::from_pem(&public).unwrap(),
            signer.verifying_key()
        );
        // A public key is not a private key, and garbage is neither.
        assert_eq!(
            ArtifactSigningKey::from_pem(&public).unwrap_err(),
            ArtifactKeyError::PrivateKey
        );
        assert_eq!(
            ArtifactVerifyingKey::from_pem("garbage").unwrap_err(),
            ArtifactKeyError::PublicKey
        );
        let printed = format!("{signer:?}");
        assert!(printed.contains("sha256:"), "{printed}");
        assert!(!printed.contains("PRIVATE"), "{printed}");
    }
}
