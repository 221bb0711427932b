//! `palisade up`: registry, runner and gateway in one process on the embedded defaults;
//! `--demo` also builds, packs, signs, publishes and installs the sample extensions and
//! shows a call going through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_bundle::{Manifest, pack_dir};
use palisade_registry::Registry;

use crate::commands::author::build_components;
use crate::commands::platform::{Listeners, Platform, Stop};
use crate::commands::registry::{add_trusted_key, dev_token};
use crate::datadir::{DataDir, read_bytes};

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
    let listeners = Listeners::bind(args.gateway_addr, args.runner_addr).await?;
    let platform = Platform::new(data_dir, registry, &listeners, &args.policy).await?;
    let (gateway_addr, runner_addr) = (listeners.gateway_addr, listeners.runner_addr);
    let demo_page = match &demo {
        Some(demo) => {
            let token = demo_token(data_dir)?;
            let uis = demo
                .uis
                .iter()
                .map(|ui| crate::commands::demo::MountedUi {
                    public_base: listeners.runner_url(),
                    gateway: listeners.gateway_url(),
                    token: token.clone(),
                    ..ui.clone()
                })
                .collect();
            Some(crate::commands::demo::router(uis))
        }
        None => None,
    };
    let stop = Stop::on(shutdown());
    let serving = platform.serve(data_dir, listeners, demo_page, &stop);
    tracing::info!(gateway = %gateway_addr, runner = %runner_addr, data_dir = %data_dir.root().display(), "palisade is up");

    println!(
        "admin API on http://{gateway_addr}/admin/v1, admin token: {} (kept in {})",
        platform.admin_token,
        crate::commands::admin_client::admin_token_path(data_dir).display()
    );
    if let Some(demo) = demo {
        show_demo(data_dir, &demo, gateway_addr).await?;
        for ui in &demo.uis {
            println!(
                "open the demo host page of {} in a browser: http://{gateway_addr}{}",
                ui.extension_id,
                crate::commands::demo::page_path(&ui.extension_id)
            );
        }
        if args.check_only {
            platform.gateway.flush_execution_log().await;
            return Ok(());
        }
    }
    println!("gateway on http://{gateway_addr}, runner on http://{runner_addr} (Ctrl-C stops)");
    serving.finish().await
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
    let key = data_dir.publisher_key("demo-publisher")?;
    add_trusted_key(registry, key.public_key()).await?;
    let trust = registry.trust_set().await?;

    let mut calls = Vec::new();
    let mut uis = Vec::new();
    let mut event = None;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(guests)
        .with_context(|| format!("listing {}", guests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // The Rust samples, which the cargo build above made; the JavaScript sample is built
        // with npm (guests/js-hello/README.md).
        .filter(|p| p.join("manifest.json").exists() && p.join("Cargo.toml").exists())
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
pub(crate) fn example_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with(':') { "world" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
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
