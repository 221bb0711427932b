//! The whole platform in one process on a data directory: a runner and a gateway in front
//! of it on loopback listeners, the event dispatcher, and the admin API. `palisade up` and
//! `palisade dev` both run it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use palisade_gateway::GatewayState;
use palisade_registry::Registry;
use palisade_runner::RunnerState;
use palisade_runtime::Runtime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::commands::policy::PolicyArgs;
use crate::commands::serve::{gateway_state, runner_runtime, runner_state_on, spawn_dispatcher};
use crate::datadir::DataDir;

/// The two listeners, bound before the gateway exists: its first health check of the
/// runner then finds the runner's socket instead of marking it unhealthy.
pub(crate) struct Listeners {
    gateway: TcpListener,
    runner: TcpListener,
    /// Where the gateway listens (the port the system chose when asked for port 0).
    pub gateway_addr: SocketAddr,
    /// Where the runner listens.
    pub runner_addr: SocketAddr,
}

impl Listeners {
    /// Binds the gateway to `gateway` and the runner to `runner` (port 0: any free port).
    pub(crate) async fn bind(gateway: SocketAddr, runner: SocketAddr) -> Result<Listeners> {
        let runner_listener = TcpListener::bind(runner)
            .await
            .with_context(|| format!("binding the runner to {runner}"))?;
        let gateway_listener = TcpListener::bind(gateway)
            .await
            .with_context(|| format!("binding the gateway to {gateway}"))?;
        Ok(Listeners {
            gateway_addr: gateway_listener.local_addr()?,
            runner_addr: runner_listener.local_addr()?,
            gateway: gateway_listener,
            runner: runner_listener,
        })
    }

    /// `http://` and the gateway's address.
    pub(crate) fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    /// `http://` and the runner's address.
    pub(crate) fn runner_url(&self) -> String {
        format!("http://{}", self.runner_addr)
    }
}

/// A runner and a gateway assembled on one registry, not serving yet.
pub(crate) struct Platform {
    /// The runner's state (its runtime compiles and runs the components).
    pub runner: Arc<RunnerState>,
    /// The runner's wasm engine, shared with `runner`.
    pub runtime: Runtime,
    /// The gateway's state.
    pub gateway: Arc<GatewayState>,
    /// The admin API's bearer token.
    pub admin_token: String,
}

impl Platform {
    /// A runner on `registry` and a gateway in front of it, for `listeners`, with the
    /// gateway's request policy `policy`. The gateway's origin may frame the runner's UIs,
    /// and the runner's address is their public base.
    pub(crate) async fn new(
        data_dir: &DataDir,
        registry: Registry,
        listeners: &Listeners,
        policy: &PolicyArgs,
    ) -> Result<Platform> {
        let runtime = runner_runtime(data_dir, &registry)?;
        let runner = Arc::new(
            runner_state_on(
                data_dir,
                &registry,
                runtime.clone(),
                Some(listeners.gateway_url()),
            )
            .await?,
        );
        let (gateway, admin_token) = crate::commands::serve::with_admin(
            gateway_state(
                data_dir,
                registry,
                vec![listeners.runner_url()],
                None,
                policy,
                Some(listeners.runner_url()),
                // The hop stays in this process's loopback: `[gateway] runner_tls_*` and
                // `[runner] tls_*` are for separate gateways and runners.
                false,
            )?,
            data_dir,
        )?;
        Ok(Platform {
            runner,
            runtime,
            gateway: Arc::new(gateway),
            admin_token,
        })
    }

    /// Serves the runner and the gateway (its router merged with `extra`, when given) on
    /// `listeners`, and starts the event dispatcher, until `stop` fires.
    pub(crate) fn serve(
        &self,
        data_dir: &DataDir,
        listeners: Listeners,
        extra: Option<axum::Router>,
        stop: &Stop,
    ) -> Serving {
        let dispatcher = spawn_dispatcher(data_dir, &self.runner, false, stop.fired());
        let runner = tokio::spawn(
            axum::serve(
                crate::commands::no_delay(listeners.runner),
                palisade_runner::app(Arc::clone(&self.runner)),
            )
            .with_graceful_shutdown(stop.fired())
            .into_future(),
        );
        let mut app = palisade_gateway::app(Arc::clone(&self.gateway));
        if let Some(extra) = extra {
            app = app.merge(extra);
        }
        let gateway = tokio::spawn(
            axum::serve(crate::commands::no_delay(listeners.gateway), app)
                .with_graceful_shutdown(stop.fired())
                .into_future(),
        );
        Serving {
            gateway_state: Arc::clone(&self.gateway),
            runner,
            gateway,
            dispatcher,
        }
    }
}

/// The servers of a [`Platform`], running.
pub(crate) struct Serving {
    gateway_state: Arc<GatewayState>,
    runner: JoinHandle<std::io::Result<()>>,
    gateway: JoinHandle<std::io::Result<()>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl Serving {
    /// Waits for the servers to stop (after their [`Stop`] fired), then writes the
    /// execution-log rows still queued (they are written in the background).
    pub(crate) async fn finish(self) -> Result<()> {
        let (runner, gateway) = tokio::join!(self.runner, self.gateway);
        self.gateway_state.flush_execution_log().await;
        runner.context("runner task")?.context("runner server")?;
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.await.context("event dispatcher task")?;
        }
        gateway.context("gateway task")?.context("gateway server")?;
        Ok(())
    }
}

/// What stops the servers: fired once, heard by every server and task holding it.
#[derive(Clone)]
pub(crate) struct Stop {
    sender: Arc<watch::Sender<bool>>,
}

impl Stop {
    /// A stop that fires when [`Stop::fire`] is called.
    pub(crate) fn new() -> Stop {
        Stop {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    /// A stop that fires when `signal` resolves (or [`Stop::fire`] is called).
    pub(crate) fn on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Stop {
        let stop = Stop::new();
        let fire = stop.clone();
        tokio::spawn(async move {
            signal.await;
            fire.fire();
        });
        stop
    }

    /// Fires the stop.
    pub(crate) fn fire(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once the stop has fired (at once if it has).
    pub(crate) fn fired(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            // The sender lives as long as any clone of the stop; a closed channel cannot
            // fire any more, so it waits for ever, like an unfired stop.
            if receiver.wait_for(|fired| *fired).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stop_is_heard_by_every_waiter_also_after_it_fired() {
        let stop = Stop::new();
        let first = tokio::spawn(stop.fired());
        let second = tokio::spawn(stop.clone().fired());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!first.is_finished() && !second.is_finished());
        stop.fire();
        tokio::time::timeout(Duration::from_secs(5), async {
            first.await.unwrap();
            second.await.unwrap();
        })
        .await
        .unwrap();
        // A waiter that comes later resolves at once.
        tokio::time::timeout(Duration::from_secs(5), stop.fired())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn listeners_on_port_zero_report_the_ports_they_got() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any).await.unwrap();
        assert_ne!(listeners.gateway_addr.port(), 0);
        assert_ne!(listeners.runner_addr.port(), 0);
        assert_ne!(listeners.gateway_addr, listeners.runner_addr);
        assert_eq!(
            listeners.gateway_url(),
            format!("http://127.0.0.1:{}", listeners.gateway_addr.port())
        );
    }
}
