//! Helpers shared by the runner's unit tests.

use palisade_registry::Registry;

/// A component importing nothing: the 8-byte header of an empty component.
const EMPTY_COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// A runner on a fresh, empty registry in `dir`, with the runtime's defaults and `config`.
pub(crate) async fn empty_runner(
    dir: &tempfile::TempDir,
    config: crate::RunnerConfig,
) -> crate::RunnerState {
    let registry = palisade_registry::testing::open(dir.path()).await;
    runner_on(registry, config).0
}

/// A runner on `registry`, and the minter of the gateway it trusts.
pub(crate) fn runner_on(
    registry: Registry,
    config: crate::RunnerConfig,
) -> (crate::RunnerState, palisade_protocol::TokenMinter) {
    let service = palisade_protocol::ServiceKeyPair::generate().unwrap();
    let minter = palisade_protocol::TokenMinter::from_pem(service.private_pem.as_bytes()).unwrap();
    let runtime = palisade_runtime::Runtime::new(
        palisade_runtime::RuntimeConfig::default(),
        palisade_runtime::HostServices::default(),
    )
    .unwrap();
    let state = crate::RunnerState::new(
        registry,
        runtime,
        palisade_protocol::TokenVerifier::from_pem(service.public_pem.as_bytes()).unwrap(),
        config,
    );
    (state, minter)
}

/// A fresh registry on `dir` with the extension `manifest` (an empty component) published
/// and installed for tenant `acme` with every capability approved; returns the install id.
pub(crate) async fn registry_with_install(
    dir: &tempfile::TempDir,
    manifest: &serde_json::Value,
) -> (Registry, String) {
    let registry = palisade_registry::testing::open(dir.path()).await;
    let component = manifest["component"].as_str().unwrap();
    let bundle = palisade_bundle::pack(
        manifest.to_string().as_bytes(),
        component,
        &EMPTY_COMPONENT,
        &[],
    )
    .unwrap();
    let key = palisade_bundle::SigningKey::generate().unwrap();
    let trust =
        palisade_bundle::TrustBundle::from_pem(key.public_key_pem().unwrap().as_bytes()).unwrap();
    registry.trust_key(key.public_key()).await.unwrap();
    registry
        .publish(&bundle, &key.sign(&bundle).unwrap(), &trust)
        .await
        .unwrap();
    let install = registry
        .install(
            "acme",
            manifest["id"].as_str().unwrap(),
            None,
            &palisade_bundle::CapabilityKey::ALL,
            Default::default(),
        )
        .await
        .unwrap();
    (registry, install.install_id)
}
