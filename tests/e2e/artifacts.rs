//! Precompiled artifacts: compiled once by the operator's publish step, then loaded by
//! runners from the shared store only with a valid signature of the artifact signing key;
//! a runner's own compiles stay in its own cache, and nothing a runner can write is loaded
//! by another runner.

use std::path::{Path, PathBuf};

use palisade_bundle::ContentHash;
use palisade_runtime::{
    ArtifactKey, ArtifactSigningKey, Artifacts, CompileStats, GrantSet, HostServices, Runtime,
    RuntimeConfig,
};

use crate::support::{Platform, guest};

/// What a process on `platform` holds: its own cache directory and cache key, the shared
/// store, the key it trusts shared artifacts from, and (the publish step only) the
/// signing key.
fn runtime(
    platform: &Platform,
    local: Option<(&Path, [u8; 32])>,
    trusted: Option<&ArtifactSigningKey>,
    signer: Option<&ArtifactSigningKey>,
) -> Runtime {
    let services = HostServices {
        artifacts: Some(Artifacts {
            local_dir: local.map(|(dir, _)| dir.to_owned()),
            remote: Some(palisade_runner::artifact_store(&platform.registry)),
            key: ArtifactKey::new(local.map_or([0; 32], |(_, key)| key)),
            trusted: trusted.map(ArtifactSigningKey::verifying_key),
            signer: signer.cloned(),
        }),
        ..HostServices::default()
    };
    Runtime::new(
        RuntimeConfig {
            max_instances: 10,
            ..RuntimeConfig::default()
        },
        services,
    )
    .unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn artifact_files(platform: &Platform) -> Vec<PathBuf> {
    files(&platform.dir.path().join("objects/artifacts"))
}

fn stats(compiled: u64, from_artifact: u64) -> CompileStats {
    CompileStats {
        compiled,
        from_artifact,
        from_memory: 0,
    }
}

#[tokio::test]
async fn a_signed_artifact_is_loaded_elsewhere_and_tampering_is_refused() {
    let platform = Platform::start().await;
    let wasm = guest("hello");
    let hash = ContentHash::of(b"stand-in bundle").to_string();
    // hello imports log, which the default capabilities grant.
    let grants = GrantSet::of(&palisade_bundle::Capabilities::default());
    let operator = ArtifactSigningKey::generate();

    // The publish step holds the signing key and stores a signed artifact.
    let publish = runtime(&platform, None, Some(&operator), Some(&operator));
    publish.precompile(&hash, wasm.clone()).await.unwrap();
    assert_eq!(artifact_files(&platform).len(), 1);

    // A runner trusting the operator's key loads it.
    let runner = runtime(&platform, None, Some(&operator), None);
    runner.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(runner.compile_stats(), stats(0, 1));
    runner.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(runner.compile_stats().from_memory, 1);

    // A runner trusting another key compiles.
    let other = ArtifactSigningKey::generate();
    let stranger = runtime(&platform, None, Some(&other), None);
    stranger.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(stranger.compile_stats(), stats(1, 0));

    // A runner trusting no key never reads the shared store.
    let untrusting = runtime(&platform, None, None, None);
    untrusting
        .prepare(&hash, wasm.clone(), grants)
        .await
        .unwrap();
    assert_eq!(untrusting.compile_stats(), stats(1, 0));

    // Tamper with the stored artifact: it is ignored and the component recompiled.
    let path = artifact_files(&platform).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let third = runtime(&platform, None, Some(&operator), None);
    third.prepare(&hash, wasm, grants).await.unwrap();
    assert_eq!(third.compile_stats(), stats(1, 0));
}

/// A runner holds everything it needs to serve, and write access to the shared store.
/// With that, it must not get another runner to run native code it did not compile
/// itself or that the operator's signing key did not sign.
#[tokio::test]
async fn a_runner_cannot_plant_native_code_that_other_runners_run() {
    let platform = Platform::start().await;
    let wasm = guest("hello");
    let hash = ContentHash::of(b"victim bundle").to_string();
    let grants = GrantSet::of(&palisade_bundle::Capabilities::default());
    let operator = ArtifactSigningKey::generate();
    let attacker_dir = tempfile::tempdir().unwrap();
    let victim_dir = tempfile::tempdir().unwrap();
    let attacker_key = [42u8; 32];

    // The attacking runner compiles under the victim's content hash with everything a
    // runner holds: its artifacts stay in its own cache, none reaches the shared store.
    let attacker = runtime(
        &platform,
        Some((attacker_dir.path(), attacker_key)),
        Some(&operator),
        None,
    );
    attacker.precompile(&hash, wasm.clone()).await.unwrap();
    assert!(artifact_files(&platform).is_empty());
    let own = files(&attacker_dir.path().join("artifacts"));
    assert_eq!(own.len(), 1, "the runner keeps its own artifact");

    // It writes into the shared store anyway: its own sealed artifact, and one signed with
    // a key of its own making.
    let store = palisade_runner::artifact_store(&platform.registry);
    let name = own[0].file_name().unwrap().to_str().unwrap();
    let object = format!("artifacts/{name}");
    store.put(&object, std::fs::read(&own[0]).unwrap()).await;
    let victim = runtime(
        &platform,
        Some((victim_dir.path(), [7u8; 32])),
        Some(&operator),
        None,
    );
    victim.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(victim.compile_stats(), stats(1, 0));

    let forger = ArtifactSigningKey::generate();
    let forging = runtime(
        &platform,
        Some((attacker_dir.path(), attacker_key)),
        Some(&forger),
        Some(&forger),
    );
    std::fs::remove_dir_all(attacker_dir.path().join("artifacts")).unwrap();
    forging.precompile(&hash, wasm.clone()).await.unwrap();
    assert_eq!(artifact_files(&platform).len(), 1);
    let second_dir = tempfile::tempdir().unwrap();
    let second_victim = runtime(
        &platform,
        Some((second_dir.path(), [8u8; 32])),
        Some(&operator),
        None,
    );
    second_victim.prepare(&hash, wasm, grants).await.unwrap();
    assert_eq!(second_victim.compile_stats(), stats(1, 0));

    // The victim's own cache serves its next start, sealed with its own key.
    let restarted = runtime(
        &platform,
        Some((victim_dir.path(), [7u8; 32])),
        Some(&operator),
        None,
    );
    restarted
        .prepare(&hash, guest("hello"), grants)
        .await
        .unwrap();
    assert_eq!(restarted.compile_stats(), stats(0, 1));
}
