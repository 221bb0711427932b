//! `palisade up`: registry, runner and gateway in one process on the embedded defaults;
//! `--demo` also builds, packs, signs, publishes and installs the sample extensions and
//! shows a call going through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_bundle::{Manifest, SigningKey, pack_dir};
use palisade_registry::Registry;

use crate::commands::author::build_components;
use crate::commands::registry::{add_trusted_key, dev_token};
use crate::commands::serve::{gateway_state, runner_state};
use crate::datadir::{DataDir, read_bytes, write_file, write_private};

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Address of the gateway (the public API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
    /// Address of the runner (called by the gateway only).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub runner_addr: SocketAddr,
    /// Build, sign, publish and install the sample extensions for tenant `demo`.
    #[arg(long)]
    pub demo: bool,
    /// The sample extensions' cargo workspace (used with --demo).
    #[arg(long, default_value = "guests")]
    pub guests_dir: PathBuf,
    /// Stop after the demo's self-check instead of serving (for scripts).
    #[arg(long, requires = "demo")]
    pub check_only: bool,
    /// The gateway's request policy, as `palisade gateway` takes it.
    #[command(flatten)]
    pub policy: crate::commands::policy::PolicyArgs,
}

const DEMO_TENANT: &str = "demo";

pub(crate) async fn up(data_dir: &DataDir, args: UpArgs) -> Result<()> {
    let caller_keys = args
        .policy
        .over(&data_dir.operator().policy)?
        .has_caller_keys();
    if args.demo && caller_keys {
        anyhow::bail!(
            "--demo calls the samples with a development caller token, so it cannot be combined with caller keys (--caller-key, --caller-jwks, or [policy] caller_keys or caller_jwks in the configuration file)"
        );
    }
    let registry = data_dir.registry().await?;
    let demo = if args.demo {
        Some(install_demo(data_dir, &registry, &args.guests_dir).await?)
    } else {
        None
    };
    // The demo host page is on the gateway's origin: it may frame the UIs.
    let gateway_origin = format!("http://{}", args.gateway_addr);
    let runner = Arc::new(runner_state(data_dir, &registry, Some(gateway_origin.clone())).await?);
    // Bind both listeners before the gateway exists: its first health check of the runner
    // then finds the runner's socket instead of marking it unhealthy.
    let runner_listener = tokio::net::TcpListener::bind(args.runner_addr)
        .await
        .with_context(|| format!("binding the runner to {}", args.runner_addr))?;
    let gateway_listener = tokio::net::TcpListener::bind(args.gateway_addr)
        .await
        .with_context(|| format!("binding the gateway to {}", args.gateway_addr))?;
    let (gateway, admin_token) = crate::commands::serve::with_admin(
        gateway_state(
            data_dir,
            registry,
            vec![format!("http://{}", args.runner_addr)],
            None,
            &args.policy,
            Some(format!("http://{}", args.runner_addr)),
            // The hop stays in this process's loopback: `[gateway] runner_tls_*` and
            // `[runner] tls_*` are for separate gateways and runners.
            false,
        )?,
        data_dir,
    )?;
    let gateway = Arc::new(gateway);

    let dispatcher = crate::commands::serve::spawn_dispatcher(data_dir, &runner, false, shutdown());
    let runner_server = tokio::spawn(
        axum::serve(
            crate::commands::no_delay(runner_listener),
            palisade_runner::app(runner),
        )
        .with_graceful_shutdown(shutdown())
        .into_future(),
    );
    let mut gateway_app = palisade_gateway::app(Arc::clone(&gateway));
    if let Some(demo) = &demo {
        let token = demo_token(data_dir)?;
        let uis = demo
            .uis
            .iter()
            .map(|ui| crate::commands::demo::MountedUi {
                public_base: format!("http://{}", args.runner_addr),
                gateway: gateway_origin.clone(),
                token: token.clone(),
                ..ui.clone()
            })
            .collect();
        gateway_app = gateway_app.merge(crate::commands::demo::router(uis));
    }
    let gateway_server = tokio::spawn(
        axum::serve(crate::commands::no_delay(gateway_listener), gateway_app)
            .with_graceful_shutdown(shutdown())
            .into_future(),
    );
    tracing::info!(gateway = %args.gateway_addr, runner = %args.runner_addr, data_dir = %data_dir.root().display(), "palisade is up");

    println!(
        "admin API on http://{}/admin/v1, admin token: {admin_token} (kept in {})",
        args.gateway_addr,
        crate::commands::admin_client::admin_token_path(data_dir).display()
    );
    if let Some(demo) = demo {
        show_demo(data_dir, &demo, args.gateway_addr).await?;
        for ui in &demo.uis {
            println!(
                "open the demo host page of {} in a browser: http://{}{}",
                ui.extension_id,
                args.gateway_addr,
                crate::commands::demo::page_path(&ui.extension_id)
            );
        }
        if args.check_only {
            gateway.flush_execution_log().await;
            return Ok(());
        }
    }
    println!(
        "gateway on http://{}, runner on http://{} (Ctrl-C stops)",
        args.gateway_addr, args.runner_addr
    );
    let (runner, gateway_served) = tokio::join!(runner_server, gateway_server);
    // Execution-log rows are written in the background: write what is queued before exiting.
    gateway.flush_execution_log().await;
    runner.context("runner task")?.context("runner server")?;
    if let Some(dispatcher) = dispatcher {
        dispatcher.await.context("event dispatcher task")?;
    }
    gateway_served
        .context("gateway task")?
        .context("gateway server")?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}

/// What the demo installed: a GET call per extension, and whether the self-check makes it
/// (extensions that reach out to the internet are only shown, not called).
struct Demo {
    calls: Vec<DemoCall>,
    /// The installed extensions with a UI (their public base, gateway and token are set
    /// when the page is served).
    uis: Vec<crate::commands::demo::MountedUi>,
    /// A topic some installed sample subscribes to, with that sample's id.
    event: Option<(String, String)>,
}

struct DemoCall {
    extension: String,
    path: String,
    self_check: bool,
}

async fn install_demo(data_dir: &DataDir, registry: &Registry, guests: &Path) -> Result<Demo> {
    if !guests.join("Cargo.toml").exists() {
        bail!(
            "--demo needs the sample extensions at {} (run from the repository root or pass --guests-dir)",
            guests.display()
        );
    }
    println!("building the sample extensions in {} ...", guests.display());
    let components = build_components(guests)?;
    let key = demo_publisher_key(data_dir)?;
    add_trusted_key(registry, key.public_key()).await?;
    let trust = registry.trust_set().await?;

    let mut calls = Vec::new();
    let mut uis = Vec::new();
    let mut event = None;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(guests)
        .with_context(|| format!("listing {}", guests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let crate_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().replace('-', "_"))
            .unwrap_or_default();
        let Some(component) = components.iter().find(|c| {
            c.file_stem()
                .is_some_and(|s| s.to_string_lossy() == crate_name)
        }) else {
            bail!("no component was built for {}", dir.display());
        };
        let bundle =
            pack_dir(&dir, component).with_context(|| format!("packing {}", dir.display()))?;
        let signature = key.sign(&bundle)?;
        let published = registry
            .publish(&bundle, &signature, &trust)
            .await
            .with_context(|| format!("publishing {}", dir.display()))?;
        let manifest = Manifest::from_json(&read_bytes(&dir.join("manifest.json"))?)?;
        let approved = manifest.capabilities.keys();
        registry
            .install(
                DEMO_TENANT,
                &published.extension_id,
                None,
                &approved,
                Default::default(),
            )
            .await
            .with_context(|| format!("installing {}", published.extension_id))?;
        println!(
            "published and installed {}@{} ({}) for tenant `{DEMO_TENANT}`",
            published.extension_id, published.version, published.content_hash
        );
        if let Some(ui) = &manifest.ui {
            uis.push(crate::commands::demo::MountedUi {
                public_base: String::new(),
                gateway: String::new(),
                extension_id: published.extension_id.clone(),
                content_hash: published.content_hash.to_string(),
                entry: ui.entry.clone(),
                sandbox: ui.sandbox.iter().map(|p| p.as_str().to_owned()).collect(),
                token: String::new(),
            });
        }
        if let Some(subscription) = manifest.events.first()
            && event.is_none()
        {
            event = Some((
                example_topic(&subscription.topic),
                published.extension_id.clone(),
            ));
        }
        if let Some(endpoint) = manifest.api.endpoints.iter().find(|e| e.method == "GET") {
            calls.push(DemoCall {
                extension: published.extension_id.clone(),
                path: example_path(&endpoint.path),
                self_check: manifest.capabilities.http.is_none(),
            });
        }
    }
    Ok(Demo { calls, uis, event })
}

/// A topic the pattern matches: `ticket.*` → `ticket.created`, `billing.#` →
/// `billing.created`.
fn example_topic(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|seg| {
            if seg == "*" || seg == "#" {
                "created"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// `/hello/:name` → `/hello/world`.
fn example_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with(':') { "world" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn demo_publisher_key(data_dir: &DataDir) -> Result<SigningKey> {
    let path = data_dir.root().join("keys/demo-publisher.key.pem");
    if path.exists() {
        return SigningKey::from_pem(&read_bytes(&path)?)
            .with_context(|| format!("reading {}", path.display()));
    }
    let key = SigningKey::generate()?;
    write_private(&path, &key.to_pem()?)?;
    write_file(
        &data_dir.root().join("keys/demo-publisher.pub.pem"),
        key.public_key_pem()?.as_bytes(),
    )?;
    Ok(key)
}

/// A caller token of the demo tenant, valid for a day.
fn demo_token(data_dir: &DataDir) -> Result<String> {
    dev_token(
        data_dir,
        DEMO_TENANT,
        "demo-user",
        Duration::from_secs(24 * 3600),
    )
}

async fn show_demo(data_dir: &DataDir, demo: &Demo, gateway: SocketAddr) -> Result<()> {
    let token = demo_token(data_dir)?;
    let client = reqwest::Client::new();
    let mut curls = Vec::new();
    for call in &demo.calls {
        let url = format!("http://{gateway}/api/ext/{}{}", call.extension, call.path);
        curls.push(format!(
            "  curl -s -H 'authorization: Bearer {token}' {url}"
        ));
        if !call.self_check {
            continue;
        }
        let response = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("self-check call to {url}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        println!("self-check GET {url}\n  -> {status} {body}");
        if !status.is_success() {
            bail!("the demo self-check failed: {url} answered {status}");
        }
    }
    println!("\ntry it (tenant `{DEMO_TENANT}`, token valid for 24 hours):");
    for curl in curls {
        println!("{curl}");
    }
    if let Some((topic, extension)) = &demo.event {
        println!(
            "\npublish an event, which the dispatcher delivers to {extension} (see its GET above):\n  \
             palisade --data-dir {} events publish --tenant {DEMO_TENANT} --topic {topic} \
             --id demo-1 --payload '{{\"ticket\": 1}}'",
            data_dir.root().display()
        );
    }
    Ok(())
}
