//! What the scenarios run on: the bench settings, data directories seeded through the
//! registry library, and server processes (`palisade runner`, `palisade gateway`,
//! `wasmtime serve`, the raw hyper server) that are killed when their guard is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use palisade_bundle::{CapabilityKey, SigningKey, TrustBundle};
use palisade_protocol::hop;
use palisade_protocol::{TokenMinter, TokenScope};
use palisade_registry::{Install, PublishedVersion, Registry, RegistryConfig};
use tempfile::TempDir;

use crate::wrk;

/// The PostgreSQL server the storage scenario uses by default.
pub(crate) const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where `wasmtime-cli` of the runtime's wasmtime version is installed by default.
pub(crate) const DEFAULT_WASMTIME: &str = "/var/tmp/palisade-bench/wasmtime-48.0.8/bin/wasmtime";

/// The plain guest every hello scenario runs (built by build.rs).
pub(crate) const PLAIN_HELLO: &str = env!("PALISADE_GUEST_PLAIN_HELLO");

/// The `raw-http` test guest (streams, downloads, a flood of stdout), which imports no
/// Palisade interface either.
pub(crate) const RAW_HTTP: &str = env!("PALISADE_GUEST_RAW_HTTP");

/// Durations and counts, from the environment.
pub(crate) struct Settings {
    /// Shorter runs, for checking that the bench works.
    pub quick: bool,
    /// Measured rounds per subject, alternated with the other subjects.
    pub rounds: usize,
    /// Length of one measured `wrk` run.
    pub duration: Duration,
    /// Length of the unmeasured `wrk` run before a subject's first round.
    pub warmup: Duration,
    /// `wrk` threads.
    pub threads: u32,
    /// `wrk` connections.
    pub connections: u32,
    /// How long each call of the memory scenario waits inside the guest.
    pub hold: Duration,
    only: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("PALISADE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let only = std::env::var("PALISADE_BENCH_ONLY")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
        let secs = |full, short| Duration::from_secs(if quick { short } else { full });
        Settings {
            quick,
            rounds: if quick { 2 } else { 5 },
            duration: secs(10, 3),
            warmup: secs(3, 1),
            threads: 1,
            connections: 32,
            hold: secs(8, 4),
            only,
        }
    }

    /// Fails if `PALISADE_BENCH_ONLY` names a scenario not in `known`.
    pub(crate) fn check_only(&self, known: &[&str]) -> Result<()> {
        for name in self.only.iter().flatten() {
            ensure!(
                known.contains(&name.as_str()),
                "PALISADE_BENCH_ONLY: unknown scenario `{name}` (known: {})",
                known.join(", ")
            );
        }
        Ok(())
    }

    /// Whether `PALISADE_BENCH_ONLY` (when set) names `scenario`.
    pub(crate) fn selected(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == scenario))
    }

    /// The `wrk` load of a measured run.
    pub(crate) fn load(&self) -> wrk::Load {
        wrk::Load {
            threads: self.threads,
            connections: self.connections,
            duration: self.duration,
        }
    }

    /// The `wrk` load of a warm-up run.
    pub(crate) fn warmup_load(&self) -> wrk::Load {
        wrk::Load {
            duration: self.warmup,
            ..self.load()
        }
    }

    /// One sentence on how subjects are measured, for the report.
    pub(crate) fn method(&self) -> String {
        format!(
            "`wrk -t{} -c{}`, {} rounds of {} s per subject, subjects alternated within each \
             round (a {} s warm-up first); medians over rounds, (min–max) in parentheses",
            self.threads,
            self.connections,
            self.rounds,
            self.duration.as_secs(),
            self.warmup.as_secs()
        )
    }
}

/// Tools and settings shared by the scenarios.
pub(crate) struct Bench {
    pub settings: Settings,
    /// The `palisade` binary.
    pub palisade: PathBuf,
    /// The `wasmtime` binary, or why the `wasmtime serve` baselines are skipped.
    pub wasmtime: Result<PathBuf, String>,
    /// The `wrk` binary.
    pub wrk: PathBuf,
    /// The PostgreSQL server for the storage scenario, or why it is skipped.
    pub postgres: Result<String, String>,
    /// Logs, scripts and data directories; removed at the end unless `PALISADE_BENCH_KEEP`
    /// is set.
    pub work: TempDir,
    /// Client for setup and checks (not for load).
    pub client: reqwest::Client,
    versions: Vec<String>,
}

impl Bench {
    /// Finds the binaries and reads the settings.
    pub(crate) async fn new() -> Result<Bench> {
        let palisade = PathBuf::from(std::env::var_os("PALISADE_BIN").context(
            "PALISADE_BIN is not set: build with `cargo build --release -p palisade-cli` and \
             point PALISADE_BIN at target/release/palisade (`just bench` does both)",
        )?);
        ensure!(
            palisade.is_file(),
            "PALISADE_BIN={} does not exist",
            palisade.display()
        );
        let wrk = PathBuf::from(std::env::var("PALISADE_BENCH_WRK").unwrap_or("wrk".into()));
        let wrk_version = version_line(&wrk, "-v").with_context(|| {
            format!(
                "`{}` cannot be run: install wrk (e.g. `apt-get install -y wrk`)",
                wrk.display()
            )
        })?;
        let wasmtime_path = std::env::var_os("PALISADE_BENCH_WASMTIME")
            .map_or_else(|| PathBuf::from(DEFAULT_WASMTIME), PathBuf::from);
        let mut versions = vec![
            version_line(&palisade, "--version")?,
            wrk_version
                .split(" [")
                .next()
                .unwrap_or(&wrk_version)
                .to_owned(),
        ];
        let wasmtime = match version_line(&wasmtime_path, "--version") {
            Ok(version) => {
                versions.push(version);
                Ok(wasmtime_path)
            }
            Err(_) => {
                let reason = format!(
                    "skipped: no wasmtime at {} (install it with `cargo install wasmtime-cli \
                     --version 48.0.8 --locked --root /var/tmp/palisade-bench/wasmtime-48.0.8`, \
                     or set PALISADE_BENCH_WASMTIME)",
                    wasmtime_path.display()
                );
                eprintln!("load bench: wasmtime serve baselines {reason}");
                Err(reason)
            }
        };
        let postgres = match std::env::var("PALISADE_BENCH_POSTGRES_URL") {
            Err(_) => Ok(DEFAULT_POSTGRES.to_owned()),
            Ok(url) if url.trim().is_empty() => {
                Err("skipped: PALISADE_BENCH_POSTGRES_URL is set to nothing".to_owned())
            }
            Ok(url) => Ok(url),
        };
        Ok(Bench {
            settings: Settings::from_env(),
            palisade,
            wasmtime,
            wrk,
            postgres,
            work: {
                let mut work = tempfile::tempdir().context("creating the work directory")?;
                if std::env::var_os("PALISADE_BENCH_KEEP").is_some_and(|v| !v.is_empty()) {
                    work.disable_cleanup(true);
                    eprintln!(
                        "load bench: keeping the work directory {}",
                        work.path().display()
                    );
                }
                work
            },
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            versions,
        })
    }

    /// The section's heading and how it was measured.
    pub(crate) fn header(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let quick = if self.settings.quick {
            "\n\n**Quick run (`PALISADE_BENCH_QUICK`): short rounds, figures are indicative only.**"
        } else {
            ""
        };
        format!(
            "## Load (real processes on loopback)\n\n\
             Measured with `cargo bench -p palisade-tests --bench load` on {cpus} CPUs, load \
             generator and servers sharing them; {}.{quick}\n",
            self.versions.join(", ")
        )
    }

    /// A new, empty data directory seeded with a trusted publisher key; its registry is
    /// `registry.db` inside it.
    pub(crate) async fn data_dir(&self, name: &str) -> Result<DataDir> {
        DataDir::create(&self.work.path().join(name), None).await
    }

    /// A data directory `<name>-postgres` whose registry is a fresh schema
    /// `palisade_bench_<name>` on `server` (dropped first if a run left it behind).
    /// [`DataDir::drop_schema`] removes it.
    pub(crate) async fn data_dir_on_postgres(&self, name: &str, server: &str) -> Result<DataDir> {
        let schema = format!("palisade_bench_{name}");
        let url = palisade_registry::testing::postgres_schema_url(server, &schema);
        let admin = palisade_registry::db::connect(server)
            .await
            .with_context(|| format!("PostgreSQL for the bench (PALISADE_BENCH_POSTGRES_URL, default {DEFAULT_POSTGRES}; set it empty to skip)"))?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let dir = self.work.path().join(format!("{name}-postgres"));
        let mut data = DataDir::create(&dir, Some(url)).await?;
        data.schema = Some(schema);
        Ok(data)
    }

    /// A free loopback address.
    pub(crate) fn free_addr() -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
        Ok(listener.local_addr()?.to_string())
    }

    fn palisade_command(&self, data: &DataDir) -> Command {
        let mut command = Command::new(&self.palisade);
        command.arg("--data-dir").arg(data.path());
        if let Some(url) = &data.database_url {
            command.arg("--database-url").arg(url);
        }
        command
            .env("RUST_LOG", "info")
            .env_remove("PALISADE_CONFIG")
            .env_remove("PALISADE_DATA_DIR");
        command
    }

    /// `palisade runner` on `data`, with `config` as its `--config` file when given;
    /// returns once `/healthz` answers.
    pub(crate) async fn runner(&self, data: &DataDir, config: Option<&str>) -> Result<Server> {
        let addr = Self::free_addr()?;
        let mut command = self.configured_command(data, config)?;
        command.args(["runner", "--listen", &addr]);
        let mut server = Server::spawn(&format!("runner-{}", data.name()), command, self, &addr)?;
        server.wait_ready(&self.client, "/healthz").await?;
        Ok(server)
    }

    /// `palisade dispatcher` on `data`, with `config` as its `--config` file when given;
    /// returns once it has said that it dispatches.
    pub(crate) async fn dispatcher(&self, data: &DataDir, config: Option<&str>) -> Result<Server> {
        let mut command = self.configured_command(data, config)?;
        command.arg("dispatcher");
        let mut server = Server::spawn(&format!("dispatcher-{}", data.name()), command, self, "")?;
        server.wait_logged("event dispatcher on").await?;
        Ok(server)
    }

    /// [`Self::palisade_command`] with `config` written to the data directory's
    /// `palisade.toml` and passed as `--config`, when given.
    fn configured_command(&self, data: &DataDir, config: Option<&str>) -> Result<Command> {
        let mut command = self.palisade_command(data);
        if let Some(config) = config {
            let path = data.path().join("palisade.toml");
            std::fs::write(&path, config)?;
            command.arg("--config").arg(path);
        }
        Ok(command)
    }

    /// `palisade gateway` on `data` in front of `runner`, with the rate limits (per
    /// install, tenant and caller) off (the load is far above their defaults); returns once `/healthz` answers.
    pub(crate) async fn gateway(&self, data: &DataDir, runner: &Server) -> Result<Server> {
        let addr = Self::free_addr()?;
        let mut command = self.palisade_command(data);
        command.args([
            "gateway",
            "--dev",
            "--listen",
            &addr,
            "--runner",
            &runner.url,
            "--rate-per-second",
            "0",
            "--tenant-rate-per-second",
            "0",
            "--caller-rate-per-second",
            "0",
        ]);
        let mut server = Server::spawn(&format!("gateway-{}", data.name()), command, self, &addr)?;
        server.wait_ready(&self.client, "/healthz").await?;
        Ok(server)
    }

    /// A caller token for `tenant` from `palisade token` (valid for two hours).
    pub(crate) fn caller_token(&self, data: &DataDir, tenant: &str) -> Result<String> {
        let output = self
            .palisade_command(data)
            .args(["token", "--tenant", tenant, "--ttl", "7200"])
            .output()
            .context("running `palisade token`")?;
        ensure!(
            output.status.success(),
            "`palisade token` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// The raw hyper server (this binary in its server mode); returns once it answers.
    pub(crate) async fn hyper_server(&self) -> Result<Server> {
        let addr = Self::free_addr()?;
        let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
        let mut command = Command::new(std::env::current_exe()?);
        command.args([crate::hyper_server::FLAG, &port]);
        let mut server = Server::spawn("hyper", command, self, &addr)?;
        server.wait_ready(&self.client, "/").await?;
        Ok(server)
    }

    /// `wasmtime serve -S cli=y` of the plain guest with `options` (`-O ...`); returns
    /// once it answers.
    pub(crate) async fn wasmtime_serve(&self, name: &str, options: &[&str]) -> Result<Server> {
        self.wasmtime_serve_of(name, Path::new(PLAIN_HELLO), options, "/hello")
            .await
    }

    /// `wasmtime serve -S cli=y` of `component` with `options`; returns once `ready`
    /// answers.
    pub(crate) async fn wasmtime_serve_of(
        &self,
        name: &str,
        component: &Path,
        options: &[&str],
        ready: &str,
    ) -> Result<Server> {
        let wasmtime = self
            .wasmtime
            .as_ref()
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        let addr = Self::free_addr()?;
        let mut command = Command::new(wasmtime);
        command
            .args(["serve", "-S", "cli=y"])
            .args(options)
            .args(["--addr", &addr])
            .arg(component);
        let mut server = Server::spawn(name, command, self, &addr)?;
        server.wait_ready(&self.client, ready).await?;
        Ok(server)
    }
}

/// The first line `binary flag` prints (on stdout or stderr).
fn version_line(binary: &Path, flag: &str) -> Result<String> {
    let output = Command::new(binary)
        .arg(flag)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    let text = [output.stdout, output.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{} {flag} printed nothing", binary.display()))
}

/// A server process, killed when dropped; its output goes to a log file.
pub(crate) struct Server {
    pub name: String,
    /// `http://127.0.0.1:<port>`; empty for a process without a listener.
    pub url: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `command` as `name`, its stdout and stderr in `<name>.log` in the work
    /// directory; `addr` is where it will listen (empty for none).
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        bench: &Bench,
        addr: &str,
    ) -> Result<Server> {
        let log = bench.work.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Server {
            name: name.to_owned(),
            url: if addr.is_empty() {
                String::new()
            } else {
                format!("http://{addr}")
            },
            child,
            log,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the log if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the process's output.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the process's output holds `text` (at most a minute).
    async fn wait_logged(&mut self, text: &str) -> Result<()> {
        self.wait_logged_within(text, Duration::from_secs(60)).await
    }

    /// Waits at most `timeout` until the process's output holds `text`.
    pub(crate) async fn wait_logged_within(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(text) {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {text:?} within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process has printed so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET {url}{path}` answers 200 (at most a minute).
    async fn wait_ready(&mut self, client: &reqwest::Client, path: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}{path}", self.url);
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer {url} within a minute:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory as the `palisade` command line lays it out: `registry.db` (or a
/// `--database-url`) whose trust set holds the publisher key, and `objects/` (the servers
/// generate their keys on first start).
pub(crate) struct DataDir {
    path: PathBuf,
    /// The registry, opened on the same database as the servers.
    pub registry: Registry,
    /// The servers' `--database-url`, when not `registry.db`.
    database_url: Option<String>,
    /// The PostgreSQL schema holding the registry, when it is one.
    schema: Option<String>,
    publisher: SigningKey,
    trust: TrustBundle,
}

impl DataDir {
    async fn create(path: &Path, database_url: Option<String>) -> Result<DataDir> {
        std::fs::create_dir_all(path)?;
        let registry = Registry::open(&RegistryConfig {
            database_url: database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", path.join("registry.db").display())),
            objects: palisade_registry::ObjectStoreConfig::Local(path.join("objects")),
        })
        .await
        .context("opening the registry")?;
        let publisher = SigningKey::generate()?;
        let pem = publisher.public_key_pem()?;
        registry
            .trust_key(publisher.public_key())
            .await
            .context("trusting the publisher key")?;
        Ok(DataDir {
            path: path.to_owned(),
            registry,
            database_url,
            schema: None,
            publisher,
            trust: TrustBundle::from_pem(pem.as_bytes())?,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the PostgreSQL schema of [`Bench::data_dir_on_postgres`] (nothing on
    /// SQLite); call once its servers are idle.
    pub(crate) async fn drop_schema(&self) -> Result<()> {
        if let Some(schema) = &self.schema {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(self.registry.pool())
                .await?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Packs, signs and publishes `component` with `manifest`.
    pub(crate) async fn publish(
        &self,
        manifest: &serde_json::Value,
        component: &[u8],
    ) -> Result<PublishedVersion> {
        let name = manifest["component"]
            .as_str()
            .context("the manifest names no component")?;
        let bundle = palisade_bundle::pack(
            serde_json::to_string(manifest)?.as_bytes(),
            name,
            component,
            &[],
        )?;
        let signature = self.publisher.sign(&bundle)?;
        Ok(self
            .registry
            .publish(&bundle, &signature, &self.trust)
            .await?)
    }

    /// Installs the newest version of `extension` for `tenant`, approving `approved`.
    pub(crate) async fn install(
        &self,
        tenant: &str,
        extension: &str,
        approved: &[CapabilityKey],
    ) -> Result<Install> {
        Ok(self
            .registry
            .install(tenant, extension, None, approved, Default::default())
            .await?)
    }
}

/// The manifest of a test guest in `tests/guests/<name>`.
pub(crate) fn guest_manifest(name: &str) -> Result<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name)
        .join("manifest.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// One installed extension, called directly on a runner over the execute hop.
pub(crate) struct Direct {
    install: Install,
    content_hash: String,
    minter: TokenMinter,
    /// Makes this value's request ids differ from every other's.
    run: String,
}

impl Direct {
    /// Calls of `install` of `published`, with service tokens from `data`'s key.
    pub(crate) fn new(
        data: &DataDir,
        install: Install,
        published: &PublishedVersion,
    ) -> Result<Direct> {
        let pem = std::fs::read(data.path.join("keys/service.key.pem"))
            .context("reading the service key (start a runner first)")?;
        Ok(Direct {
            content_hash: published.content_hash.to_string(),
            install,
            minter: TokenMinter::from_pem(&pem)?,
            run: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// `count` distinct calls of `method path?query`, each with its own request id and
    /// service token (a runner refuses a token presented twice).
    pub(crate) fn requests(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        count: usize,
    ) -> Result<Vec<wrk::Request>> {
        (0..count)
            .map(|i| self.call(method, path, query, i))
            .collect()
    }

    /// Call `index` of `method path?query`: its own request id and service token.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        index: usize,
    ) -> Result<wrk::Request> {
        let path = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let request_id = format!("bench-{}-{index}", self.run);
        let scope = TokenScope {
            tenant_id: self.install.tenant_id.clone(),
            extension_id: self.install.extension_id.clone(),
            install_id: self.install.install_id.clone(),
            content_hash: self.content_hash.clone(),
            method: method.to_owned(),
            path: path.clone(),
            request_id: request_id.clone(),
            user_id: None,
        };
        let token = self.minter.mint(&scope, now, now + 600)?;
        Ok(wrk::Request {
            method: method.into(),
            path: format!("{}{path}", hop::EXECUTE_PREFIX),
            headers: vec![
                ("x-palisade-token".into(), token),
                ("x-palisade-request-id".into(), request_id),
                ("x-palisade-tenant".into(), self.install.tenant_id.clone()),
                (
                    "x-palisade-extension".into(),
                    self.install.extension_id.clone(),
                ),
                ("x-palisade-install".into(), self.install.install_id.clone()),
                ("x-palisade-version".into(), self.install.version_id.clone()),
                ("x-palisade-content-hash".into(), self.content_hash.clone()),
            ],
            body: None,
        })
    }
}

/// A `GET path` through a gateway with a caller token.
pub(crate) fn gateway_request(extension: &str, path: &str, token: &str) -> wrk::Request {
    wrk::Request {
        method: "GET".into(),
        path: format!("/api/ext/{extension}{path}"),
        headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        body: None,
    }
}

/// Sends `request` to `base` once; returns the status and body.
pub(crate) async fn send(
    client: &reqwest::Client,
    base: &str,
    request: &wrk::Request,
) -> Result<(u16, Vec<u8>)> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
    let mut builder = client.request(method, format!("{base}{}", request.path));
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder
        .send()
        .await
        .with_context(|| format!("{} {base}{}", request.method, request.path))?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?.to_vec()))
}

/// Sends `request` and checks that the guest answered 200 with `expected`.
pub(crate) async fn expect_body(
    client: &reqwest::Client,
    base: &str,
    request: &wrk::Request,
    expected: &[u8],
) -> Result<()> {
    let (status, body) = send(client, base, request).await?;
    ensure!(
        status == 200 && body == expected,
        "{} {base}{} answered {status} {:?}, expected 200 {:?}",
        request.method,
        request.path,
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(expected)
    );
    Ok(())
}
