//! Loading a version for execution: from the runtime's cache, or from the object store
//! with the bundle re-hashed and its signature re-verified before anything is compiled.

use palisade_bundle::archive::{UnpackLimits, unpack};
use palisade_bundle::hash::ContentHash;
use palisade_bundle::signing::decode_signature;
use palisade_registry::RegistryError;
use palisade_runtime::{GrantSet, LoadError, Prepared};

use crate::RunnerState;
use crate::error::RunnerError;

impl RunnerState {
    /// The pre-instance for `hash` linked with `grants`, loading and verifying on first use.
    pub(crate) async fn prepared(
        &self,
        hash: &ContentHash,
        grants: GrantSet,
    ) -> Result<Prepared, RunnerError> {
        let key = hash.to_string();
        if let Some(prepared) = self.runtime.cached(&key, grants) {
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
        self.trust
            .verify(&bytes, &decode_signature(&signature))
            .map_err(|e| RunnerError::BundleIntegrity(format!("signature of {hash}: {e}")))?;
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
