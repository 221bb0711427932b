//! `palisade runner`: one runner on the data directory, with an event dispatcher unless
//! `[events] dispatch` is off, draining gracefully on SIGTERM or Ctrl-C (new calls get 503
//! `unavailable`, running calls and deliveries finish, then the process exits).
//! `palisade dispatcher`: the dispatcher alone, serving nothing but, with
//! `--metrics-listen`, its `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::commands::serve::{runner_state, spawn_dispatcher, stop_signal};
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub(crate) struct RunnerArgs {
    /// Address to serve the execute protocol on (called by gateways only).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Longest wait, in seconds, for running calls to finish once a drain began (default:
    /// `[runner] drain_timeout_secs` of the configuration file, 60).
    #[arg(long)]
    pub drain_timeout: Option<u64>,
    /// Also serve `GET /healthz`, `/readyz` and `/metrics` in plain HTTP on this address,
    /// for probes and scrapers that hold no client certificate when the runner's listener
    /// requires one (`[runner] tls_client_ca`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

pub(crate) async fn runner(data_dir: &DataDir, args: RunnerArgs) -> Result<()> {
    let registry = data_dir.registry().await?;
    let state = Arc::new(runner_state(data_dir, &registry, None).await?);
    let dispatcher = spawn_dispatcher(data_dir, &state, false, stop_signal());
    let drain = state.drain();
    let tls = match data_dir.operator().runner.tls_files() {
        Some(files) => {
            Some(palisade_protocol::tls::ServerTls::load(&files).context("[runner] tls_cert")?)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the runner to {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the runner's address")?;
    let observability = match args.metrics_listen {
        Some(listen) => Some(serve_observability(listen, &state).await?),
        None => None,
    };
    tracing::info!(%addr, tls = tls.is_some(), data_dir = %data_dir.root().display(), "runner is up");
    let drain_timeout = Duration::from_secs(
        args.drain_timeout
            .unwrap_or(data_dir.operator().runner.drain_timeout_secs),
    );
    let drained = async move {
        stop_signal().await;
        drain.begin();
        if tokio::time::timeout(drain_timeout, drain.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = drain.in_flight(),
                "drain timeout reached; stopping with calls still running"
            );
        }
    };
    let app = palisade_runner::app(state);
    match tls {
        Some(tls) => {
            let mutual = if tls.is_mutual() {
                ", client certificates required"
            } else {
                ""
            };
            println!("runner on https://{addr}{mutual} (SIGTERM or Ctrl-C drains and stops)");
            let listener = palisade_protocol::tls::TlsListener::new(listener, tls)
                .context("starting the runner's TLS listener")?;
            axum::serve(listener, app)
                .with_graceful_shutdown(drained)
                .await
        }
        None => {
            println!("runner on http://{addr} (SIGTERM or Ctrl-C drains and stops)");
            axum::serve(crate::commands::no_delay(listener), app)
                .with_graceful_shutdown(drained)
                .await
        }
    }
    .context("runner server")?;
    if let Some(observability) = observability {
        observability.abort();
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.await.context("event dispatcher task")?;
    }
    tracing::info!("runner stopped");
    Ok(())
}

/// Serves `/healthz`, `/readyz` and `/metrics` of `state` in plain HTTP on `listen`, until
/// the returned task is aborted.
async fn serve_observability(
    listen: SocketAddr,
    state: &Arc<palisade_runner::RunnerState>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener to {listen}"))?;
    let addr = listener
        .local_addr()
        .context("reading the metrics address")?;
    println!("probes and metrics on http://{addr}");
    let app = palisade_runner::observability_app(Arc::clone(state));
    Ok(tokio::spawn(
        async move { axum::serve(listener, app).await },
    ))
}

#[derive(Debug, Args)]
pub(crate) struct DispatcherArgs {
    /// Serve `GET /metrics` (this process's series, event deliveries included) and `GET
    /// /healthz` on this address; unset: the dispatcher serves nothing.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// `palisade dispatcher`: delivers events (and nothing else) until SIGTERM or Ctrl-C; the
/// deliveries in progress finish first. With `--metrics-listen`, its series are served
/// there.
pub(crate) async fn dispatcher(data_dir: &DataDir, args: DispatcherArgs) -> Result<()> {
    let registry = data_dir.registry().await?;
    let state = Arc::new(runner_state(data_dir, &registry, None).await?);
    let metrics = match args.metrics_listen {
        Some(listen) => Some(serve_observability(listen, &state).await?),
        None => None,
    };
    println!(
        "event dispatcher on {} (SIGTERM or Ctrl-C stops)",
        data_dir.root().display()
    );
    if let Some(dispatcher) = spawn_dispatcher(data_dir, &state, true, stop_signal()) {
        dispatcher.await.context("event dispatcher task")?;
    }
    if let Some(server) = metrics {
        server.abort();
    }
    Ok(())
}
