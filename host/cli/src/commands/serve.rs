//! The wiring `up`, `runner` and `gateway` share: a runner or a gateway assembled from the
//! data directory's registry and keys, the event dispatcher, and the signals that stop a
//! server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_gateway::{CallerAuthConfig, GatewayConfig, GatewayState};
use palisade_protocol::{TokenMinter, TokenVerifier};
use palisade_registry::Registry;
use palisade_runner::RunnerState;
use palisade_runtime::Runtime;

use crate::commands::policy::PolicyArgs;
use crate::datadir::{DEV_AUDIENCE, DEV_ISSUER, DataDir};

/// A runner on `registry`, trusting the registry's publisher keys and the data
/// directory's service key, with its secrets keyring and artifact cache. `frame_ancestor`
/// may frame its UIs when the configuration file names none.
pub(crate) async fn runner_state(
    data_dir: &DataDir,
    registry: &Registry,
    frame_ancestor: Option<String>,
) -> Result<RunnerState> {
    let runtime = runner_runtime(data_dir, registry)?;
    runner_state_on(data_dir, registry, runtime, frame_ancestor).await
}

/// The wasm engine of a runner on `registry`: the configuration file's `[runtime]`, the
/// capabilities' host services backed by the registry, the secrets keyring and the
/// artifact cache.
pub(crate) fn runner_runtime(data_dir: &DataDir, registry: &Registry) -> Result<Runtime> {
    let opener = crate::commands::secrets::load_opener(data_dir)?;
    let operator = data_dir.operator();
    let mut services = palisade_runner::host_services(registry, opener);
    services.storage = Some(palisade_runner::RegistryStorage::shared(
        registry.clone(),
        operator.storage,
    ));
    services.artifacts = Some(data_dir.artifacts(registry)?);
    Runtime::new(operator.runtime.clone(), services).context("starting the wasm engine")
}

/// [`runner_state`] on an engine made by [`runner_runtime`].
pub(crate) async fn runner_state_on(
    data_dir: &DataDir,
    registry: &Registry,
    runtime: Runtime,
    frame_ancestor: Option<String>,
) -> Result<RunnerState> {
    if registry.trusted_keys().await?.is_empty() {
        tracing::warn!(
            "the registry trusts no publisher key: nothing can run until one is added with `palisade trust add KEY.pub.pem` (or start with --demo)"
        );
    }
    let service_key = data_dir.service_public_key()?;
    let operator = data_dir.operator();
    Ok(RunnerState::new(
        registry.clone(),
        runtime,
        TokenVerifier::from_pem(service_key.as_bytes())?,
        palisade_runner::RunnerConfig {
            ui: {
                let mut ui = operator.ui.to_ui_config(data_dir.root().join("ui-cache"));
                if ui.frame_ancestors.is_empty() {
                    ui.frame_ancestors.extend(frame_ancestor);
                }
                ui
            },
            ..operator.runner.to_runner_config()?
        },
    ))
}

/// A gateway on `registry` in front of `runner_urls`, with the configuration file's
/// `[gateway]` and its `[policy]` under the policy flags (without caller keys there, it
/// accepts the data directory's development caller tokens), signing service tokens with
/// the data directory's service key. `ui_public_base` is the UI's public base when the
/// file sets none. `hop_tls`: whether `[gateway] runner_tls_*` apply (not to `up`'s
/// in-process loopback hop).
pub(crate) fn gateway_state(
    data_dir: &DataDir,
    registry: Registry,
    runner_urls: Vec<String>,
    health_interval: Option<Duration>,
    policy: &PolicyArgs,
    ui_public_base: Option<String>,
    hop_tls: bool,
) -> Result<GatewayState> {
    let service_keys = data_dir.service_keys()?;
    let caller_keys = data_dir.caller_issuer_keys()?;
    let mut config = GatewayConfig::with_runners(
        runner_urls,
        CallerAuthConfig::new(DEV_ISSUER, DEV_AUDIENCE, caller_keys.public_pem.clone()),
    );
    let operator = data_dir.operator();
    operator.gateway.apply(&mut config);
    if let Some(interval) = health_interval {
        config.health_interval = interval;
    }
    policy.over(&operator.policy)?.apply(&mut config)?;
    if !hop_tls {
        config.runner_tls = None;
    }
    config.ui_public_base = operator.ui.public_base.clone().or(ui_public_base);
    config.max_event_payload_bytes = operator.events.max_payload_bytes;
    config.quotas = operator.quotas.to_quota_config();
    Ok(GatewayState::new(
        config,
        registry,
        TokenMinter::from_pem(service_keys.private_pem.as_bytes())?,
    )?)
}

/// Starts an event dispatcher on `state` when `[events] dispatch` is on (`always`: in any
/// case), stopping when `stop` resolves. Returns its task.
pub(crate) fn spawn_dispatcher(
    data_dir: &DataDir,
    state: &Arc<RunnerState>,
    always: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let events = &data_dir.operator().events;
    if !(always || events.dispatch) {
        tracing::info!("event dispatch is off in this process ([events] dispatch = false)");
        return None;
    }
    let dispatcher =
        palisade_runner::events::Dispatcher::new(Arc::clone(state), events.to_dispatch_config());
    Some(tokio::spawn(dispatcher.run(stop)))
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops")
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Turns on the admin API of `state` with the data directory's admin token (generated on
/// first use) and secrets public key (when one exists: a gateway never holds a key that
/// opens secrets, nor generates one). Publishing verifies against the registry's trust set.
pub(crate) fn with_admin(
    state: GatewayState,
    data_dir: &DataDir,
) -> Result<(GatewayState, String)> {
    let token = crate::commands::admin_client::admin_token(data_dir)?;
    let mut state = state.with_admin_token(token.as_str());
    match crate::commands::secrets::load_public_sealer(data_dir)? {
        Some(sealer) => state = state.with_sealer(sealer),
        None => tracing::warn!(
            path = %crate::commands::secrets::public_key_path(data_dir).display(),
            "setting secrets through the admin API is off: no secrets public key (start a \
             runner on this data directory first, or set ${})",
            crate::commands::secrets::PUBLIC_KEY_ENV
        ),
    }
    Ok((state, token))
}
