//! Trust bundles: the publisher public keys an operator accepts.

use std::path::Path;

use super::{KeyFingerprint, PUBLIC_KEY_LABEL, PublicKey, SigningError, pem};

/// A set of accepted publisher public keys, read from a PEM file holding one or more
/// `-----BEGIN PUBLIC KEY-----` blocks (text between blocks is ignored).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    keys: Vec<PublicKey>,
}

impl TrustBundle {
    /// Parses a PEM trust bundle. A bad block is reported by its 1-based position.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<TrustBundle, SigningError> {
        let text = std::str::from_utf8(pem_bytes).map_err(|_| {
            SigningError::PublicKey("the trust bundle is not UTF-8 text".to_owned())
        })?;
        let mut keys = Vec::new();
        for (i, block) in pem::parse_blocks(text).into_iter().enumerate() {
            let at = |message: String| SigningError::TrustBundleKey {
                block: i + 1,
                message,
            };
            let block = block.map_err(at)?;
            if block.label != PUBLIC_KEY_LABEL {
                return Err(at(format!(
                    "expected a `PUBLIC KEY` block, found `{}`",
                    block.label
                )));
            }
            keys.push(PublicKey::from_der(&block.der).map_err(|e| at(e.to_string()))?);
        }
        Self::from_keys(keys)
    }

    /// Reads a PEM trust bundle from `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<TrustBundle, SigningError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SigningError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&bytes)
    }

    /// A trust bundle of `keys` (duplicates are dropped); refuses an empty list.
    pub fn from_keys(keys: Vec<PublicKey>) -> Result<TrustBundle, SigningError> {
        let mut unique: Vec<PublicKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.iter().any(|k| k.der == key.der) {
                unique.push(key);
            }
        }
        if unique.is_empty() {
            return Err(SigningError::EmptyTrustBundle);
        }
        Ok(Self { keys: unique })
    }

    /// A set without any key, e.g. a registry that trusts no publisher yet: it verifies
    /// nothing ([`SigningError::NoTrustedKeys`]).
    pub fn empty() -> TrustBundle {
        Self { keys: Vec::new() }
    }

    /// A set of `keys` (duplicates are dropped), which may be empty.
    pub fn from_keys_allow_empty(keys: Vec<PublicKey>) -> TrustBundle {
        match Self::from_keys(keys) {
            Ok(bundle) => bundle,
            Err(_) => Self::empty(),
        }
    }

    /// Whether the key with `fingerprint` is in the set.
    pub fn contains(&self, fingerprint: &KeyFingerprint) -> bool {
        self.keys.iter().any(|k| &k.fingerprint() == fingerprint)
    }

    /// How many distinct keys the bundle holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the bundle holds no key (only [`TrustBundle::empty`] and
    /// [`TrustBundle::from_keys_allow_empty`] make such a set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Verifies `signature` (raw bytes; see [`super::decode_signature`]) over `bytes` and
    /// returns the fingerprint of the first key that accepts it.
    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> Result<KeyFingerprint, SigningError> {
        if self.keys.is_empty() {
            return Err(SigningError::NoTrustedKeys);
        }
        self.keys
            .iter()
            .find(|key| key.verify(bytes, signature).is_ok())
            .map(PublicKey::fingerprint)
            .ok_or(SigningError::BadSignature)
    }
}
