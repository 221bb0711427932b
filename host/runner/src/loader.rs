//! Loading a version for execution: from the runtime's cache, or from the object store
//! with the bundle re-hashed and its signature re-verified before anything is compiled.
//!
//! The trust set is the registry's, read again at most every trust-cache TTL. Every call
//! checks that the key which verified the bundle is still trusted; when it is not (the key
//! was removed, or the bundle was signed again with another key), the stored signature is
//! verified again before the call runs.

use std::collections::HashMap;
use std::sync::Mutex;

use palisade_bundle::archive::{UnpackLimits, unpack};
use palisade_bundle::hash::ContentHash;
use palisade_bundle::signing::{KeyFingerprint, TrustBundle, decode_signature};
use palisade_registry::RegistryError;
use palisade_runtime::{GrantSet, LoadError, Prepared};

use crate::RunnerState;
use crate::error::RunnerError;

/// Most content hashes whose verifying key is remembered; past it the map starts over
/// (the next call of each re-verifies its bundle).
const MAX_VERIFIED: usize = 16_384;

/// The key that verified each content hash's stored signature, as last checked.
#[derive(Debug, Default)]
pub(crate) struct VerifiedSigners {
    signers: Mutex<HashMap<ContentHash, KeyFingerprint>>,
}

impl VerifiedSigners {
    /// Whether `hash` was verified by a key that `trust` still holds.
    fn still_trusted(&self, hash: &ContentHash, trust: &TrustBundle) -> bool {
        let signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        signers.get(hash).is_some_and(|key| trust.contains(key))
    }

    fn record(&self, hash: ContentHash, key: KeyFingerprint) {
        let mut signers = self.signers.lock().unwrap_or_else(|e| e.into_inner());
        if signers.len() >= MAX_VERIFIED && !signers.contains_key(&hash) {
            signers.clear();
        }
        signers.insert(hash, key);
    }
}

impl RunnerState {
    /// The pre-instance for `hash` linked with `grants`, loading and verifying on first use,
    /// and verifying the signature again whenever the key that verified it is no longer
    /// trusted.
    pub(crate) async fn prepared(
        &self,
        hash: &ContentHash,
        grants: GrantSet,
    ) -> Result<Prepared, RunnerError> {
        let trust = self
            .registry
            .trust_set()
            .await
            .map_err(|e| RunnerError::Internal(format!("reading the trust set: {e}")))?;
        let key = hash.to_string();
        let trusted = self.verified.still_trusted(hash, &trust);
        if trusted && let Some(prepared) = self.runtime.cached(&key, grants) {
            return Ok(prepared);
        }
        let (bytes, signature) = self
            .registry
            .bundle_bytes(hash)
            .await
            .map_err(|e| match e {
                RegistryError::BundleMissing { .. } => RunnerError::BundleIntegrity(e.to_string()),
                other => RunnerError::Internal(other.to_string()),
            })?;
        let actual = ContentHash::of(&bytes);
        if &actual != hash {
            return Err(RunnerError::BundleIntegrity(format!(
                "stored bundle hashes to {actual}, expected {hash}"
            )));
        }
        let signer = trust
            .verify(&bytes, &decode_signature(&signature))
            .map_err(|e| RunnerError::BundleIntegrity(format!("signature of {hash}: {e}")))?;
        self.verified.record(*hash, signer);
        if let Some(prepared) = self.runtime.cached(&key, grants) {
            return Ok(prepared);
        }
        let bundle = unpack(&bytes, &UnpackLimits::default())
            .map_err(|e| RunnerError::BundleIntegrity(format!("unpacking {hash}: {e}")))?;
        self.runtime
            .prepare(&key, bundle.component, grants)
            .await
            .map_err(|e| match e {
                LoadError::Compile(_) | LoadError::NotAHandler(_) | LoadError::Imports(_) => {
                    RunnerError::BundleIntegrity(format!("{hash}: {e}"))
                }
                other => RunnerError::Internal(other.to_string()),
            })
    }
}
