//! `palisade dev [DIR]`: the extension crate in `DIR` served by a local platform while it
//! is edited. Registry, runner and gateway run in this process (as `palisade up` runs
//! them) on a data directory of their own, `DIR/target/palisade-dev` unless `--data-dir`
//! is given on the command line. A dev publisher key (generated once, kept there) is
//! trusted, and each build is published as a new dev version (see [`version`]) and
//! installed for the dev tenant with every capability its manifest requests approved.
//!
//! The crate is watched ([`watch`]); a change rebuilds it as `palisade build` does (cargo
//! for `wasm32-wasip2`, the manifest, the import check), packs, signs and publishes it,
//! compiles the component, and moves the install to the new version, which answers the
//! next call. A build that fails shows cargo's errors and leaves the last good version
//! serving. The guest's log lines are printed as they are written ([`guest_log`]).

mod guest_log;
mod version;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_bundle::{ContentHash, Manifest, SigningKey};
use palisade_registry::Registry;
use palisade_runtime::Runtime;
use semver::Version;

pub(crate) use guest_log::GuestLines;

use crate::commands::author::{
    built_components, cargo_build, check_component_imports, ensure_wasm_target, pick_component,
    read_manifest,
};
use crate::commands::platform::{Listeners, Platform, Stop};
use crate::commands::registry::{add_trusted_key, config_pairs, dev_token};
use crate::config::OperatorConfig;
use crate::datadir::{DataDir, read_bytes};

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// The extension crate: a `Cargo.toml` and a `manifest.json` (optionally `ui/`), as
    /// `palisade new` makes it.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Address of the gateway (the public API).
    #[arg(long, visible_alias = "listen", default_value = "127.0.0.1:8090")]
    pub gateway_addr: SocketAddr,
    /// Address of the runner (called by the gateway, and serving the extension's UI);
    /// port 0 takes any free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub runner_addr: SocketAddr,
    /// The tenant the extension is installed for.
    #[arg(long, default_value = "dev")]
    pub tenant: String,
    /// The user of the printed caller token (the `sub` the extension sees).
    #[arg(long, default_value = "dev")]
    pub user: String,
    /// Non-secret configuration of the install, `key=value`, repeatable (as `palisade
    /// install --set`).
    #[arg(long = "set", id = "set", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// The gateway's request policy, as `palisade gateway` takes it.
    #[command(flatten)]
    pub policy: crate::commands::policy::PolicyArgs,
}

/// The data directory of `dev` for the crate in `dir`, unless one is given.
pub(crate) fn default_data_dir(dir: &Path) -> PathBuf {
    dir.join("target").join("palisade-dev")
}

/// The name of the dev publisher key in the data directory (`keys/<name>.key.pem`).
const DEV_KEY: &str = "dev-publisher";

/// How long the printed caller token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The operator settings `dev` runs with: the configuration file's, except that the
/// registry is the data directory's own, installs are read from the registry on every
/// call (so a new version answers the next call, not half a second later), and every
/// guest log line reaches the terminal.
pub(crate) fn dev_operator(mut operator: OperatorConfig) -> OperatorConfig {
    operator.registry.object_store = None;
    operator.gateway.install_cache_ttl_ms = 0;
    operator.gateway.unknown_extension_ttl_ms = 0;
    operator.runner.install_cache_ttl_ms = 0;
    operator.runtime.operator_log_lines_per_second = 0.0;
    operator
}

pub(crate) async fn dev(
    args: DevArgs,
    data_dir: Option<PathBuf>,
    operator: OperatorConfig,
) -> Result<()> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("the extension crate {}", args.dir.display()))?;
    for file in ["Cargo.toml", "manifest.json"] {
        if !dir.join(file).is_file() {
            bail!(
                "{} is not an extension crate: it has no {file} (`palisade new NAME` makes one)",
                dir.display()
            );
        }
    }
    palisade_registry::install::validate_tenant_id(&args.tenant)
        .with_context(|| format!("--tenant `{}`", args.tenant))?;
    let config = config_pairs(&args.config)?;
    if args.policy.over(&operator.policy)?.has_caller_keys() {
        bail!(
            "dev prints a development caller token, so it cannot be combined with caller keys \
             (--caller-key, --caller-jwks, or [policy] caller_keys or caller_jwks in the \
             configuration file)"
        );
    }
    let root = data_dir.unwrap_or_else(|| default_data_dir(&dir));
    let data_dir = DataDir::new(root).with_operator_config(dev_operator(operator));
    let registry = data_dir.registry().await?;
    let key = data_dir.publisher_key(DEV_KEY)?;
    add_trusted_key(&registry, key.public_key()).await?;
    let token = dev_token(&data_dir, &args.tenant, &args.user, TOKEN_TTL)?;

    let listeners = Listeners::bind(args.gateway_addr, args.runner_addr).await?;
    let gateway_url = listeners.gateway_url();
    let runner_url = listeners.runner_url();
    let platform = Platform::new(&data_dir, registry.clone(), &listeners, &args.policy).await?;
    let stop = Stop::on(crate::commands::serve::stop_signal());
    let serving = platform.serve(&data_dir, listeners, None, &stop);
    println!(
        "palisade dev: {}\n  gateway {gateway_url}, runner {runner_url}\n  data directory {} \
         (tenant `{}`)",
        dir.display(),
        data_dir.root().display(),
        args.tenant
    );

    let mut watch = watch::Watch::start(&dir)?;
    let mut session = Session {
        dir,
        registry,
        runtime: platform.runtime.clone(),
        key,
        tenant: args.tenant,
        config,
        gateway_url,
        runner_url,
        user: args.user,
        token,
        target_checked: false,
        served: None,
    };
    let mut build = true;
    let mut announced = false;
    loop {
        if build {
            tokio::select! {
                () = stop.fired() => break,
                () = session.rebuild() => {}
            }
            if !announced {
                announced = true;
                println!("watching for changes (Ctrl-C stops)");
            }
        }
        // Changes made during a build are taken now, as one batch.
        tokio::select! {
            () = stop.fired() => break,
            batch = watch.next_batch() => match batch {
                Some(batch) => build = session.take(&mut watch, batch),
                None => bail!("the file watcher stopped"),
            },
        }
    }
    drop(watch);
    println!("stopping");
    serving.finish().await
}

/// What one dev session keeps between builds.
struct Session {
    dir: PathBuf,
    registry: Registry,
    runtime: Runtime,
    key: SigningKey,
    tenant: String,
    config: BTreeMap<String, String>,
    gateway_url: String,
    runner_url: String,
    user: String,
    token: String,
    /// Whether the toolchain was found to have the wasm target.
    target_checked: bool,
    /// The version answering now.
    served: Option<Served>,
}

/// The version installed for the dev tenant.
struct Served {
    extension_id: String,
    version: Version,
    inputs: Inputs,
}

/// What a bundle is made of, before the version is set in its manifest.
#[derive(PartialEq, Eq)]
struct Inputs {
    manifest_json: Vec<u8>,
    component: Vec<u8>,
    ui: Vec<(String, Vec<u8>)>,
}

/// What a build did.
enum Outcome {
    /// A new version answers.
    Reloaded {
        manifest: Box<Manifest>,
        version: Version,
        content_hash: ContentHash,
        build: Duration,
        total: Duration,
        /// Whether it is the first version of its extension id this session.
        first: bool,
    },
    /// The build made what is served already.
    Unchanged,
}

impl Session {
    /// Notes a batch of changes (or a watch error); whether it calls for a build.
    fn take(&self, watch: &mut watch::Watch, batch: watch::Batch) -> bool {
        match batch {
            Ok(paths) => {
                if let Err(err) = watch.rewatch(&paths) {
                    eprintln!("warning: {err:#}");
                }
                let mut shown: Vec<String> = paths
                    .iter()
                    .take(3)
                    .map(|p| p.display().to_string())
                    .collect();
                if paths.len() > 3 {
                    shown.push(format!("and {} more", paths.len() - 3));
                }
                println!("changed: {}", shown.join(", "));
                true
            }
            Err(err) => {
                eprintln!("warning: watching {}: {err}", self.dir.display());
                false
            }
        }
    }

    /// Builds and reloads, and says how it went.
    async fn rebuild(&mut self) {
        match self.reload().await {
            Ok(Outcome::Reloaded {
                manifest,
                version,
                content_hash,
                build,
                total,
                first,
            }) => {
                let hash = content_hash.to_string();
                println!(
                    "reloaded {}@{version} ({}) in {} ms (build {} ms)",
                    manifest.id,
                    hash.get(..19).unwrap_or(&hash),
                    total.as_millis(),
                    build.as_millis()
                );
                if let Some(ui) = &manifest.ui {
                    println!(
                        "  UI: {}/ext-ui/{}/{hash}/{}",
                        self.runner_url, manifest.id, ui.entry
                    );
                }
                if first {
                    self.show_ready(&manifest);
                }
            }
            Ok(Outcome::Unchanged) => println!("no change: {}", self.serving()),
            Err(err) => {
                eprintln!("error: {err:#}");
                println!("build failed: {}", self.serving());
            }
        }
    }

    /// What answers now, in words.
    fn serving(&self) -> String {
        match &self.served {
            Some(served) => format!("still serving {}@{}", served.extension_id, served.version),
            None => "nothing is served yet; fix the error and save".to_owned(),
        }
    }

    /// Builds the crate, and when it made something new, publishes it as the next dev
    /// version, compiles it and moves the dev tenant's install to it.
    async fn reload(&mut self) -> Result<Outcome> {
        let started = Instant::now();
        let components = self.build().await?;
        let build = started.elapsed();

        let manifest_path = self.dir.join("manifest.json");
        let manifest = read_manifest(&manifest_path)?;
        let manifest_json = read_bytes(&manifest_path)?;
        let component = read_bytes(pick_component(&manifest, &components)?)?;
        check_component_imports(&component, &manifest)?;
        let inputs = Inputs {
            manifest_json,
            component,
            ui: collect_ui(&self.dir.join("ui"))?,
        };
        if self
            .served
            .as_ref()
            .is_some_and(|served| served.inputs == inputs)
        {
            return Ok(Outcome::Unchanged);
        }

        let checked = started.elapsed();
        let versions = self.registry.list_versions(&manifest.id).await?;
        let version = version::dev_version(
            &manifest.version,
            version::next_dev_number(
                &manifest.version,
                versions.iter().map(|v| v.version.as_str()),
            ),
        );
        let bundle = {
            let manifest_json = with_version(&inputs.manifest_json, &version)?;
            let name = manifest.component.clone();
            let component = inputs.component.clone();
            let ui = inputs.ui.clone();
            tokio::task::spawn_blocking(move || {
                palisade_bundle::pack(&manifest_json, &name, &component, &ui)
            })
            .await
            .context("packing the bundle")?
            .with_context(|| format!("packing {}", self.dir.display()))?
        };
        let packed = started.elapsed();
        let signature = self.key.sign(&bundle)?;
        // The dev key may sign this id, even one an earlier key of this data directory
        // published first.
        self.registry
            .allow_signer(&manifest.id, &self.key.public_key().fingerprint())
            .await
            .with_context(|| format!("allowing the dev key to sign {}", manifest.id))?;
        let trust = self.registry.trust_set().await?;
        let published = self
            .registry
            .publish(&bundle, &signature, &trust)
            .await
            .with_context(|| format!("publishing {}@{version}", manifest.id))?;
        let published_at = started.elapsed();
        // Compiled before the install moves, so that the old version answers until the new
        // one is ready and the first call of the new one does not wait for the compiler.
        self.runtime
            .compiled(
                &published.content_hash.to_string(),
                inputs.component.clone(),
            )
            .await
            .with_context(|| format!("compiling {}@{version}", manifest.id))?;
        let compiled = started.elapsed();
        let approved = manifest.capabilities.keys();
        self.registry
            .install_with(
                &self.tenant,
                &manifest.id,
                Some(&version),
                &approved,
                self.config.clone(),
                true,
            )
            .await
            .with_context(|| {
                format!(
                    "installing {}@{version} for tenant `{}`",
                    manifest.id, self.tenant
                )
            })?;
        let total = started.elapsed();
        let ms = |from: Duration, to: Duration| to.saturating_sub(from).as_millis();
        tracing::info!(
            build_ms = build.as_millis(),
            check_ms = ms(build, checked),
            pack_ms = ms(checked, packed),
            publish_ms = ms(packed, published_at),
            compile_ms = ms(published_at, compiled),
            install_ms = ms(compiled, total),
            "reload steps"
        );
        let first = self
            .served
            .as_ref()
            .is_none_or(|served| served.extension_id != manifest.id);
        self.served = Some(Served {
            extension_id: manifest.id.clone(),
            version: version.clone(),
            inputs,
        });
        Ok(Outcome::Reloaded {
            manifest: Box::new(manifest),
            version,
            content_hash: published.content_hash,
            build,
            total,
            first,
        })
    }

    /// `cargo build` of the crate (the wasm target added first, once), cargo's
    /// diagnostics on stderr; the components it made.
    async fn build(&mut self) -> Result<Vec<PathBuf>> {
        if !self.target_checked {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || ensure_wasm_target(&dir))
                .await
                .context("checking the toolchain")??;
            self.target_checked = true;
        }
        let mut command = tokio::process::Command::from(cargo_build(&self.dir));
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("running cargo in {}", self.dir.display()))?;
        let output = child
            .wait_with_output()
            .await
            .with_context(|| format!("running cargo in {}", self.dir.display()))?;
        built_components(&self.dir, &output)
    }

    /// The caller token and a call to paste, once the extension answers.
    fn show_ready(&self, manifest: &Manifest) {
        let base = format!("{}/api/ext/{}", self.gateway_url, manifest.id);
        println!(
            "{} answers for tenant `{}` at {base}/\ncaller token (user `{}`, valid for {} days):\n  {}",
            manifest.id,
            self.tenant,
            self.user,
            TOKEN_TTL.as_secs() / (24 * 3600),
            self.token
        );
        let endpoints = &manifest.api.endpoints;
        match endpoints
            .iter()
            .find(|e| e.method == "GET")
            .or(endpoints.first())
        {
            Some(endpoint) => println!(
                "try it:\n  {}",
                curl(&endpoint.method, &base, &endpoint.path, &self.token)
            ),
            None => println!("(the manifest declares no endpoint to call)"),
        }
    }
}

/// A `curl` line calling `method path` (its `:params` filled in) with `token`.
fn curl(method: &str, base: &str, path: &str, token: &str) -> String {
    let path = crate::commands::up::example_path(path);
    let method = if method == "GET" {
        String::new()
    } else {
        format!("-X {method} ")
    };
    format!("curl -s {method}-H 'authorization: Bearer {token}' {base}{path}")
}

/// `manifest.json` with its `version` replaced by `version`, the rest as it was.
fn with_version(manifest_json: &[u8], version: &Version) -> Result<Vec<u8>> {
    let mut manifest: serde_json::Value =
        serde_json::from_slice(manifest_json).context("manifest.json is not JSON")?;
    let object = manifest
        .as_object_mut()
        .context("manifest.json is not a JSON object")?;
    object.insert(
        "version".to_owned(),
        serde_json::Value::String(version.to_string()),
    );
    let mut bytes = serde_json::to_vec_pretty(&manifest)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Every regular file below `dir` (the crate's `ui/`), with `/`-separated paths, as
/// `palisade pack` takes them: symbolic links, special files and names that are not UTF-8
/// are refused. Nothing when `dir` does not exist.
fn collect_ui(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            bail!("{} must be a directory", dir.display())
        }
        Ok(_) => {}
    }
    collect_tree(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn collect_tree(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            bail!("{}: the file name is not UTF-8", path.display());
        };
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        let relative = format!("{prefix}{name}");
        if kind.is_symlink() {
            bail!(
                "{} is a symbolic link, which a bundle cannot hold",
                path.display()
            );
        } else if kind.is_dir() {
            collect_tree(&path, &format!("{relative}/"), out)?;
        } else if kind.is_file() {
            out.push((relative, read_bytes(&path)?));
        } else {
            bail!("{} is not a regular file", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_replaced_and_nothing_else() {
        let json = br#"{"$schema": "s", "id": "com.example.a", "version": "0.1.0", "limits": {"timeout_ms": 5}}"#;
        let out = with_version(json, &Version::parse("0.1.0-dev.4").unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["version"], "0.1.0-dev.4");
        assert_eq!(value["$schema"], "s");
        assert_eq!(value["limits"]["timeout_ms"], 5);
        assert!(with_version(b"[1]", &Version::new(1, 0, 0)).is_err());
        assert!(with_version(b"{", &Version::new(1, 0, 0)).is_err());
    }

    #[test]
    fn curl_lines_fill_in_parameters_and_name_other_methods() {
        assert_eq!(
            curl("GET", "http://g/api/ext/x", "/hello/:name", "T"),
            "curl -s -H 'authorization: Bearer T' http://g/api/ext/x/hello/world"
        );
        assert_eq!(
            curl("POST", "http://g/api/ext/x", "/hit/:page", "T"),
            "curl -s -X POST -H 'authorization: Bearer T' http://g/api/ext/x/hit/world"
        );
    }

    #[test]
    fn ui_files_are_collected_in_order_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ui = dir.path().join("ui");
        assert!(collect_ui(&ui).unwrap().is_empty());
        std::fs::create_dir_all(ui.join("assets")).unwrap();
        std::fs::write(ui.join("index.html"), "<p>").unwrap();
        std::fs::write(ui.join("assets/app.js"), "x").unwrap();
        assert_eq!(
            collect_ui(&ui).unwrap(),
            vec![
                ("assets/app.js".to_owned(), b"x".to_vec()),
                ("index.html".to_owned(), b"<p>".to_vec()),
            ]
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(ui.join("index.html"), ui.join("link.html")).unwrap();
            let err = collect_ui(&ui).unwrap_err().to_string();
            assert!(err.contains("link.html is a symbolic link"), "{err}");
        }
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(collect_ui(&dir.path().join("file")).is_err());
    }

    #[test]
    fn dev_reads_installs_on_every_call_and_keeps_its_own_registry() {
        let mut operator = OperatorConfig::default();
        operator.registry.object_store = Some("s3://bucket".into());
        let operator = dev_operator(operator);
        assert_eq!(operator.registry.object_store, None);
        assert_eq!(operator.gateway.install_cache_ttl_ms, 0);
        assert_eq!(operator.gateway.unknown_extension_ttl_ms, 0);
        assert_eq!(operator.runner.install_cache_ttl_ms, 0);
        assert_eq!(operator.runtime.operator_log_lines_per_second, 0.0);
        assert_eq!(
            default_data_dir(Path::new("/w/ext")),
            Path::new("/w/ext/target/palisade-dev")
        );
    }
}
