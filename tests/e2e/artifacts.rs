//! Precompiled artifacts: compiled once, then loaded by other runtimes from the shared
//! store; a tampered artifact is never deserialized.

use palisade_bundle::ContentHash;
use palisade_runtime::{
    ArtifactKey, Artifacts, CompileStats, GrantSet, HostServices, Runtime, RuntimeConfig,
};

use crate::support::{Platform, guest};

fn runtime(platform: &Platform, key: [u8; 32]) -> Runtime {
    let services = HostServices {
        artifacts: Some(Artifacts {
            local_dir: None,
            remote: Some(palisade_runner::artifact_store(&platform.registry)),
            key: ArtifactKey::new(key),
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

fn artifact_files(platform: &Platform) -> Vec<std::path::PathBuf> {
    let dir = platform.dir.path().join("objects/artifacts");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn an_artifact_compiled_once_is_loaded_elsewhere_and_tampering_is_refused() {
    let platform = Platform::start().await;
    let wasm = guest("hello");
    let hash = ContentHash::of(b"stand-in bundle").to_string();
    // hello imports log, which the default capabilities grant.
    let grants = GrantSet::of(&palisade_bundle::Capabilities::default());
    let key = [42u8; 32];

    let first = runtime(&platform, key);
    first.precompile(&hash, wasm.clone()).await.unwrap();
    assert_eq!(artifact_files(&platform).len(), 1);

    let second = runtime(&platform, key);
    second.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(
        second.compile_stats(),
        CompileStats {
            compiled: 0,
            from_artifact: 1,
            from_memory: 0
        }
    );
    second.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(second.compile_stats().from_memory, 1);

    // A runtime with another key does not trust the artifact: it compiles.
    let stranger = runtime(&platform, [7u8; 32]);
    stranger.prepare(&hash, wasm.clone(), grants).await.unwrap();
    assert_eq!(stranger.compile_stats().compiled, 1);
    assert_eq!(stranger.compile_stats().from_artifact, 0);

    // Tamper with the stored artifact: it is ignored and the component recompiled.
    let path = artifact_files(&platform).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let third = runtime(&platform, key);
    third.prepare(&hash, wasm, grants).await.unwrap();
    assert_eq!(third.compile_stats().compiled, 1);
    assert_eq!(third.compile_stats().from_artifact, 0);
}
