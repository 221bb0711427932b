//! Loading a version for execution: from the runtime's cache, or from the object store
//! with the bundle re-hashed and its signature re-verified before anything is compiled.
//!
//! Loads are single-flight per content hash: when many calls of a bundle arrive before it
//! is compiled, one of them reads, verifies, unpacks and compiles it and the others wait
//! for that result (a success or the same error). Each then links the compiled component
//! for its own grant set.
//!
//! The trust set is the registry's, read again at most every trust-cache TTL. Every call
//! checks that the key which verified the bundle is still trusted; when it is not (the key
//! was removed, or the bundle was signed again with another key), the stored signature is
//! verified again before the call runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_bundle::archive::{UnpackLimits, unpack};
use palisade_bundle::hash::ContentHash;
use palisade_bundle::signing::{KeyFingerprint, TrustBundle, decode_signature};
use palisade_registry::RegistryError;
use palisade_runtime::{Compiled, GrantSet, LoadError, Prepared};
use tokio::sync::OnceCell;

use crate::RunnerState;
use crate::error::{Integrity, RunnerError};

/// One load in progress: every caller for the content hash awaits the same cell. If the
/// caller that started it goes away (its client disconnected), the next waiter takes over.
type Flight = Arc<OnceCell<Result<Compiled, RunnerError>>>;

/// Loads in progress, by content hash.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    flights: Mutex<HashMap<String, Flight>>,
}

impl Loads {
    /// The flight for `key`, joined or started.
    fn join(&self, key: &str) -> Flight {
        match self.flights.lock() {
            Ok(mut flights) => flights.entry(key.to_owned()).or_default().clone(),
            // A poisoned map: load alone rather than fail.
            Err(_) => Flight::default(),
        }
    }

    /// Forgets `flight` once it has landed, so a later load (after an error, or after the
    /// compiled component was evicted) starts afresh.
    fn land(&self, key: &str, flight: &Flight) {
        if let Ok(mut flights) = self.flights.lock()
            && flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            flights.remove(key);
        }
    }
}

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
        let trust = self.registry.trust_set().await.map_err(RunnerError::from)?;
        let key = hash.to_string();
        let compiled = if self.verified.still_trusted(hash, &trust) {
            if let Some(prepared) = self.runtime.cached(&key, grants) {
                return Ok(prepared);
            }
            self.runtime.compiled_in_memory(&key)
        } else {
            None
        };
        let compiled = match compiled {
            Some(compiled) => compiled,
            None => {
                let flight = self.loads.join(&key);
                let outcome = flight
                    .get_or_init(|| self.load(hash, &key, &trust))
                    .await
                    .clone();
                self.loads.land(&key, &flight);
                outcome?
            }
        };
        self.runtime
            .link(&key, &compiled, grants)
            .map_err(|e| load_error(hash, e))
    }

    /// Reads and verifies the bundle `hash` against `trust`, then unpacks and compiles it
    /// unless it is compiled already (a bundle verified again after a trust change).
    async fn load(
        &self,
        hash: &ContentHash,
        key: &str,
        trust: &TrustBundle,
    ) -> Result<Compiled, RunnerError> {
        let bytes = self.verified_bundle(hash, trust).await?;
        if let Some(compiled) = self.runtime.compiled_in_memory(key) {
            return Ok(compiled);
        }
        let bundle =
            unpack(&bytes, &UnpackLimits::default()).map_err(|e| RunnerError::BundleIntegrity {
                hash: *hash,
                problem: Integrity::Unpack(Arc::new(e)),
            })?;
        self.runtime
            .compiled(key, bundle.component)
            .await
            .map_err(|e| load_error(hash, e))
    }

    /// The bundle `hash` from the object store, re-hashed and its stored signature
    /// verified against `trust`; the verifying key is remembered.
    pub(crate) async fn verified_bundle(
        &self,
        hash: &ContentHash,
        trust: &TrustBundle,
    ) -> Result<Vec<u8>, RunnerError> {
        let integrity = |problem| RunnerError::BundleIntegrity {
            hash: *hash,
            problem,
        };
        let (bytes, signature) = self
            .registry
            .bundle_bytes(hash)
            .await
            .map_err(|e| match e {
                RegistryError::BundleMissing { .. } => integrity(Integrity::Missing(Arc::new(e))),
                RegistryError::ObjectMismatch { .. } => integrity(Integrity::Corrupt(Arc::new(e))),
                other => other.into(),
            })?;
        let actual = ContentHash::of(&bytes);
        if &actual != hash {
            return Err(integrity(Integrity::HashMismatch(actual)));
        }
        let signer = trust
            .verify(&bytes, &decode_signature(&signature))
            .map_err(|e| integrity(Integrity::Signature(Arc::new(e))))?;
        self.verified.record(*hash, signer);
        Ok(bytes)
    }
}

/// The runner's error for a runtime load failure (which code it is answered with is
/// decided in [`RunnerError::code`]).
fn load_error(hash: &ContentHash, e: LoadError) -> RunnerError {
    RunnerError::Load {
        hash: *hash,
        source: Arc::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_protocol::{ErrorCode, ServiceKeyPair, TokenVerifier};

    use palisade_runtime::{HostServices, Runtime, RuntimeConfig};

    /// A component of `instances` core instances, with thousands of functions (slow enough
    /// to compile that simultaneous loads overlap) and no handler export.
    fn component(instances: usize) -> Vec<u8> {
        let mut text = String::from("(component (core module $m\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "(func (export \"f{i}\") (param i64) (result i64) \
                 local.get 0 i64.const {i} i64.mul)\n"
            ));
        }
        text.push_str(")\n");
        for _ in 0..instances {
            text.push_str("(core instance (instantiate $m))\n");
        }
        text.push(')');
        wat::parse_str(&text).unwrap()
    }

    /// A runner (engine settings `runtime`) over a registry holding one published bundle of
    /// `component`, and the bundle's content hash.
    async fn runner(
        dir: &tempfile::TempDir,
        runtime: RuntimeConfig,
        component: &[u8],
    ) -> (RunnerState, ContentHash) {
        let registry = palisade_registry::testing::open(dir.path()).await;
        let manifest = serde_json::json!({
            "id": "com.example.loaded",
            "name": "Loaded",
            "publisher": "Example",
            "version": "1.0.0",
            "runtime": "wasi-http@0.2",
            "component": "c.wasm",
            "api": { "endpoints": [ { "method": "GET", "path": "/x" } ] }
        });
        let bundle =
            palisade_bundle::pack(manifest.to_string().as_bytes(), "c.wasm", component, &[])
                .unwrap();
        let key = palisade_bundle::SigningKey::generate().unwrap();
        let trust =
            palisade_bundle::TrustBundle::from_pem(key.public_key_pem().unwrap().as_bytes())
                .unwrap();
        registry.trust_key(key.public_key()).await.unwrap();
        let published = registry
            .publish(&bundle, &key.sign(&bundle).unwrap(), &trust)
            .await
            .unwrap();
        let runtime = Runtime::new(runtime, HostServices::default()).unwrap();
        let service = ServiceKeyPair::generate().unwrap();
        let state = RunnerState::new(
            registry,
            runtime,
            TokenVerifier::from_pem(service.public_pem.as_bytes()).unwrap(),
            crate::RunnerConfig::default(),
        );
        (state, published.content_hash)
    }

    fn small_pool() -> RuntimeConfig {
        RuntimeConfig {
            max_instances: 4,
            ..RuntimeConfig::default()
        }
    }

    #[tokio::test]
    async fn simultaneous_first_loads_read_and_compile_once() {
        let dir = tempfile::tempdir().unwrap();
        let (state, hash) = runner(&dir, small_pool(), &component(1)).await;
        let loads = (0..8).map(|_| state.prepared(&hash, GrantSet::default()));
        for result in futures::future::join_all(loads).await {
            // Compiled, but not a handler: every caller gets the engine's refusal.
            assert!(
                result
                    .as_ref()
                    .is_err_and(|e| e.code() == ErrorCode::LoadFailed),
                "{result:?}"
            );
        }
        assert_eq!(state.runtime.compile_stats().compiled, 1);
        // Later loads link the compiled component from memory.
        let again = state.prepared(&hash, GrantSet::default()).await;
        assert!(again.is_err_and(|e| e.code() == ErrorCode::LoadFailed));
        assert_eq!(state.runtime.compile_stats().compiled, 1);
    }

    #[tokio::test]
    async fn an_engine_refusal_is_load_failed_and_a_missing_blob_bundle_integrity() {
        let dir = tempfile::tempdir().unwrap();
        // Published under the default caps; this runner allows fewer core instances.
        let runtime = RuntimeConfig {
            max_core_instances_per_component: 2,
            ..small_pool()
        };
        let (state, hash) = runner(&dir, runtime, &component(3)).await;
        let err = state
            .prepared(&hash, GrantSet::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::LoadFailed, "{err}");
        assert_eq!(err.code(), palisade_protocol::ErrorCode::LoadFailed);
        assert_eq!(err.code().status(), 502);

        let hex = hash.to_string().trim_start_matches("sha256:").to_owned();
        std::fs::remove_file(dir.path().join(format!("objects/bundles/{hex}.tar.zst"))).unwrap();
        // Nothing was compiled, so the next load reads the store again.
        let err = state
            .prepared(&hash, GrantSet::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::BundleIntegrity { .. }), "{err}");
    }
}
