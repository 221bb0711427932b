//! A whole platform on loopback for one test: registry, runner and gateway servers, a
//! trusted publisher key and a caller-token issuer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_bundle::{SigningKey, TrustBundle};
use palisade_gateway::{CallerAuthConfig, GatewayConfig, GatewayState};
use palisade_protocol::{ServiceKeyPair, TokenMinter, TokenScope, TokenVerifier};
use palisade_registry::secrets::SecretKey;
use palisade_registry::{PublishedVersion, Registry, SecretOpener, SecretSealer};
use palisade_runner::{RunnerConfig, RunnerState};
use palisade_runtime::{Runtime, RuntimeConfig};
use tempfile::TempDir;

pub(crate) const ISSUER: &str = "palisade-test";
pub(crate) const AUDIENCE: &str = "palisade";
/// The admin API token of every test platform's gateway.
pub(crate) const ADMIN_TOKEN: &str = "e2e-admin-token";

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The component of a guest built by build.rs (a member of `guests/` or `tests/guests/`).
pub(crate) fn guest(name: &str) -> Vec<u8> {
    let Some((_, path)) = GUESTS.iter().find(|(guest, _)| *guest == name) else {
        panic!("unknown guest {name}: build.rs builds the members of guests/ and tests/guests/");
    };
    std::fs::read(path).unwrap()
}

/// The sample manifest of `guests/hello`.
pub(crate) fn hello_manifest() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guests/hello/manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Packs a bundle from a manifest value and a component.
pub(crate) fn bundle(manifest: &serde_json::Value, component: &[u8]) -> Vec<u8> {
    let name = manifest["component"].as_str().unwrap();
    palisade_bundle::pack(
        serde_json::to_string_pretty(manifest).unwrap().as_bytes(),
        name,
        component,
        &[],
    )
    .unwrap()
}

pub(crate) struct Platform {
    pub dir: TempDir,
    pub registry: Registry,
    pub publisher: SigningKey,
    pub trust: TrustBundle,
    pub service_keys: ServiceKeyPair,
    pub caller_keys: ServiceKeyPair,
    pub gateway: SocketAddr,
    pub runner: SocketAddr,
    pub client: reqwest::Client,
    /// The public key the gateway seals secrets with.
    pub sealer: SecretSealer,
    /// The keyring the runner opens secrets with.
    pub opener: SecretOpener,
    /// The runner's state, for dispatchers delivering through it.
    pub runner_state: Arc<RunnerState>,
}

/// Operator settings a test may change; `Default` is what most tests use.
pub(crate) struct Options {
    pub runtime: RuntimeConfig,
    pub runner: RunnerConfig,
    /// Changes to the gateway's configuration.
    pub gateway: fn(&mut GatewayConfig),
    /// The storage capability's limits, when not the defaults.
    pub storage: Option<palisade_runtime::capability::storage::StorageLimits>,
    /// The object store, when not a directory beside the registry.
    pub objects: Option<palisade_registry::ObjectStoreConfig>,
    /// The registry's database, when not the test's own.
    pub database_url: Option<String>,
    /// How long the registry handle reuses the trust set, when not the default.
    pub trust_cache_ttl: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: RuntimeConfig {
                max_instances: 50,
                ..RuntimeConfig::default()
            },
            runner: RunnerConfig::default(),
            gateway: |_| {},
            storage: None,
            objects: None,
            database_url: None,
            trust_cache_ttl: None,
        }
    }
}

impl Platform {
    pub(crate) async fn start() -> Platform {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(options: Options) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let objects = options.objects.unwrap_or_else(|| {
            palisade_registry::ObjectStoreConfig::Local(dir.path().join("objects"))
        });
        let registry = match options.database_url {
            Some(database_url) => Registry::open(&palisade_registry::RegistryConfig {
                database_url,
                objects,
            })
            .await
            .unwrap(),
            None => palisade_registry::testing::open_with_objects(dir.path(), objects).await,
        }
        .with_component_limits(options.runtime.component_limits());
        let registry = match options.trust_cache_ttl {
            Some(ttl) => registry.with_trust_cache_ttl(ttl),
            None => registry,
        };
        let publisher = SigningKey::generate().unwrap();
        let trust = TrustBundle::from_pem(publisher.public_key_pem().unwrap().as_bytes()).unwrap();
        registry.trust_key(publisher.public_key()).await.unwrap();
        let service_keys = ServiceKeyPair::generate().unwrap();
        let caller_keys = ServiceKeyPair::generate().unwrap();

        let opener = SecretOpener::new(SecretKey::generate(), []).unwrap();
        let sealer = opener.sealer().clone();
        let mut services = palisade_runner::host_services(&registry, opener.clone());
        if let Some(limits) = options.storage {
            services.storage = Some(palisade_runner::RegistryStorage::shared(
                registry.clone(),
                limits,
            ));
        }
        let runtime = Runtime::new(options.runtime, services).unwrap();
        let runner_state = Arc::new(RunnerState::new(
            registry.clone(),
            runtime,
            TokenVerifier::from_pem(service_keys.public_pem.as_bytes()).unwrap(),
            options.runner,
        ));
        let runner = serve(palisade_runner::app(Arc::clone(&runner_state))).await;
        let mut gateway_config = without_rate_limit(GatewayConfig::new(
            format!("http://{runner}"),
            CallerAuthConfig::new(ISSUER, AUDIENCE, caller_keys.public_pem.clone()),
        ));
        (options.gateway)(&mut gateway_config);
        let gateway_state = Arc::new(
            GatewayState::new(
                gateway_config,
                registry.clone(),
                TokenMinter::from_pem(service_keys.private_pem.as_bytes()).unwrap(),
            )
            .unwrap()
            .with_admin_token(ADMIN_TOKEN)
            .with_sealer(sealer.clone()),
        );
        let gateway = serve(palisade_gateway::app(gateway_state)).await;
        Platform {
            dir,
            registry,
            publisher,
            trust,
            service_keys,
            caller_keys,
            gateway,
            runner,
            client: reqwest::Client::new(),
            sealer,
            opener,
            runner_state,
        }
    }

    /// Signs and publishes `bundle` with the trusted publisher key.
    pub(crate) async fn publish(&self, bundle: &[u8]) -> PublishedVersion {
        let signature = self.publisher.sign(bundle).unwrap();
        self.registry
            .publish(bundle, &signature, &self.trust)
            .await
            .unwrap()
    }

    /// Publishes the guest `component` under `manifest` and installs it for each of
    /// `tenants`, approving `approved`; returns the install ids, in the order of `tenants`.
    pub(crate) async fn install_guest(
        &self,
        manifest: &serde_json::Value,
        component: &str,
        tenants: &[&str],
        approved: &[palisade_bundle::CapabilityKey],
    ) -> Vec<String> {
        self.publish(&bundle(manifest, &guest(component))).await;
        let id = manifest["id"].as_str().unwrap();
        let mut installs = Vec::new();
        for tenant in tenants {
            let install = self
                .registry
                .install(tenant, id, None, approved, Default::default())
                .await
                .unwrap();
            installs.push(install.install_id);
        }
        installs
    }

    /// Signs `bundle` with the trusted key and returns why publishing refused it.
    pub(crate) async fn publish_error(&self, bundle: &[u8]) -> String {
        let signature = self.publisher.sign(bundle).unwrap();
        self.registry
            .publish(bundle, &signature, &self.trust)
            .await
            .unwrap_err()
            .to_string()
    }

    /// Publishes the hello guest and installs it for `tenant`, approving what it asks.
    pub(crate) async fn install_hello(&self, tenant: &str) -> PublishedVersion {
        let published = self
            .publish(&bundle(&hello_manifest(), &guest("hello")))
            .await;
        self.registry
            .install(
                tenant,
                "com.example.hello",
                None,
                &[palisade_bundle::CapabilityKey::Log],
                Default::default(),
            )
            .await
            .unwrap();
        published
    }

    /// A valid caller token for `tenant`.
    pub(crate) fn token(&self, tenant: &str) -> String {
        palisade_gateway::mint_dev_token(
            self.caller_keys.private_pem.as_bytes(),
            ISSUER,
            AUDIENCE,
            tenant,
            "user-1",
            Duration::from_secs(300),
        )
        .unwrap()
    }

    /// `GET {gateway}/api/ext/{ext}{path}` with a token for `tenant`.
    pub(crate) async fn call(&self, tenant: &str, ext: &str, path: &str) -> reqwest::Response {
        self.request(tenant, reqwest::Method::GET, ext, path)
            .send()
            .await
            .unwrap()
    }

    /// The status of [`Self::call`], its body read to the end first: a call whose answer
    /// is dropped unread is recorded as `cancelled`, and its stats arrive with the body's
    /// end.
    pub(crate) async fn call_status(
        &self,
        tenant: &str,
        ext: &str,
        path: &str,
    ) -> reqwest::StatusCode {
        let response = self.call(tenant, ext, path).await;
        let status = response.status();
        let _ = response.bytes().await;
        status
    }

    /// The execution-log rows of `tenant`'s `extension`, newest first, once there are
    /// `count` of them or 5 s have passed (the gateway writes them in the background).
    pub(crate) async fn execution_rows(
        &self,
        tenant: &str,
        extension: &str,
        count: usize,
    ) -> Vec<palisade_registry::ExecutionRecord> {
        let mut rows = Vec::new();
        for _ in 0..250 {
            rows = self
                .registry
                .recent_executions(tenant, Some(extension), 1000)
                .await
                .unwrap();
            if rows.len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rows
    }

    /// Checks that the hello sample still answers `tenant`: what one extension does never
    /// takes the platform down for the others.
    pub(crate) async fn assert_hello_answers(&self, tenant: &str) {
        let response = self.call(tenant, "com.example.hello", "/hello/ada").await;
        assert_eq!(response.status(), 200, "hello no longer answers");
    }

    /// `{method} {gateway}/api/ext/{ext}{path}` with a token for `tenant`, to be sent.
    pub(crate) fn request(
        &self,
        tenant: &str,
        method: reqwest::Method,
        ext: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(
                method,
                format!("http://{}/api/ext/{ext}{path}", self.gateway),
            )
            .bearer_auth(self.token(tenant))
    }
}

/// A registry with a publisher key of its own in its trust set, to seed a platform whose
/// runners and gateways run in other processes on the same database and objects.
pub(crate) struct Seeder {
    pub(crate) registry: Registry,
    publisher: palisade_bundle::SigningKey,
    trust: palisade_bundle::TrustBundle,
    /// The publisher's public key, PEM, for a trust file.
    pub(crate) trust_pem: String,
}

impl Seeder {
    /// Opens the registry at `database_url` with its objects in `object_store_dir`.
    pub(crate) async fn open(database_url: &str, object_store_dir: PathBuf) -> Seeder {
        let publisher = palisade_bundle::SigningKey::generate().unwrap();
        let trust_pem = publisher.public_key_pem().unwrap();
        let trust = palisade_bundle::TrustBundle::from_pem(trust_pem.as_bytes()).unwrap();
        let registry = Registry::open(&palisade_registry::RegistryConfig {
            database_url: database_url.to_owned(),
            objects: palisade_registry::ObjectStoreConfig::Local(object_store_dir),
        })
        .await
        .unwrap();
        registry.trust_key(publisher.public_key()).await.unwrap();
        Seeder {
            registry,
            publisher,
            trust,
            trust_pem,
        }
    }

    /// Publishes the guest `component` under `manifest` and installs it for `tenant`,
    /// approving `approved`.
    pub(crate) async fn install(
        &self,
        tenant: &str,
        manifest: &serde_json::Value,
        component: &str,
        approved: &[palisade_bundle::CapabilityKey],
    ) -> PublishedVersion {
        let bytes = bundle(manifest, &guest(component));
        let signature = self.publisher.sign(&bytes).unwrap();
        let published = self
            .registry
            .publish(&bytes, &signature, &self.trust)
            .await
            .unwrap();
        self.registry
            .install(
                tenant,
                &published.extension_id,
                None,
                approved,
                Default::default(),
            )
            .await
            .unwrap();
        published
    }
}

/// Sends `request` and returns its JSON answer, which must be a 200.
pub(crate) async fn ok_json(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `config` with the rate limits (per install, tenant and caller) off: some suites call
/// one install as fast as they can (the limits have their own tests in
/// `gateway_policy.rs`).
fn without_rate_limit(mut config: GatewayConfig) -> GatewayConfig {
    config.rate_limit.per_second = 0.0;
    config.tenant_rate_limit.per_second = 0.0;
    config.caller_rate_limit.per_second = 0.0;
    config
}

pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// The `palisade` binary of this build, built on first use (a no-op when it is fresh).
pub(crate) fn palisade_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            // This test runs as {target}/{profile}/deps/e2e-<hash>.
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = std::process::Command::new(cargo);
            build
                .args([
                    "build",
                    "-p",
                    "palisade-cli",
                    "--bin",
                    "palisade",
                    "--target-dir",
                ])
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building palisade failed: {status}");
            let binary = profile_dir.join(format!("palisade{}", std::env::consts::EXE_SUFFIX));
            assert!(binary.exists(), "{} is missing", binary.display());
            binary
        })
        .clone()
}

/// A call made straight to a runner over the execute hop, as a gateway makes it.
pub(crate) struct HopCall {
    pub context: palisade_protocol::CallContext,
    pub method: http::Method,
    /// The path inside the extension, with its query.
    pub path: String,
    pub body: Vec<u8>,
    /// `None`: no `x-palisade-token` header at all.
    pub token: Option<String>,
}

/// A runner's answer to a [`HopCall`], read to its end (trailers included).
pub(crate) struct HopReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl HopCall {
    /// A GET of `path` for `install` of `published`, for tenant `tenant`, without a token.
    pub(crate) fn get(
        tenant: &str,
        install_id: &str,
        published: &palisade_registry::PublishedVersion,
        path: &str,
    ) -> Self {
        HopCall {
            context: palisade_protocol::CallContext {
                request_id: uuid_like(),
                tenant_id: tenant.into(),
                extension_id: published.extension_id.clone(),
                install_id: install_id.into(),
                version_id: published.version_id.clone(),
                content_hash: published.content_hash.to_string(),
                ..Default::default()
            },
            method: http::Method::GET,
            path: path.into(),
            body: Vec::new(),
            token: None,
        }
    }

    /// The scope a token for this call must carry.
    pub(crate) fn scope(&self) -> TokenScope {
        TokenScope {
            tenant_id: self.context.tenant_id.clone(),
            extension_id: self.context.extension_id.clone(),
            install_id: self.context.install_id.clone(),
            content_hash: self.context.content_hash.clone(),
            method: self.method.as_str().to_owned(),
            path: self.path.clone(),
            request_id: self.context.request_id.clone(),
            user_id: self.context.user_id.clone(),
        }
    }

    /// Signs the call with the gateway's key `keys`.
    pub(crate) fn signed(mut self, keys: &ServiceKeyPair) -> Self {
        let minter = TokenMinter::from_pem(keys.private_pem.as_bytes()).unwrap();
        self.token = Some(minter.token(&self.scope()).unwrap());
        self
    }

    /// Sends the call to the runner at `runner` and reads the whole answer.
    pub(crate) async fn send(&self, runner: SocketAddr) -> HopReply {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(format!("http://{runner}/v1/execute{}", self.path))
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                self.body.clone(),
            )))
            .unwrap();
        self.context.write_to(request.headers_mut()).unwrap();
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert("x-palisade-token", token.parse().unwrap());
        }
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        HopReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes().to_vec(),
            trailers,
        }
    }
}

impl HopReply {
    /// What the runner reported the call consumed: from the trailers of a guest's answer,
    /// or the header of a platform error.
    pub(crate) fn stats(&self) -> Option<palisade_protocol::ExecuteStats> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("x-palisade-stats"))
            .or_else(|| self.headers.get("x-palisade-stats"))
            .map(|value| palisade_protocol::ExecuteStats::from_header(value).unwrap())
    }

    /// How the body ended, from the trailers.
    pub(crate) fn outcome(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("x-palisade-outcome"))
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A request id unique enough for one test run.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "hop-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
