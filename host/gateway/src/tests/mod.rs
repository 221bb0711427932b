//! Router-level tests: a real registry on a temporary directory, requests through
//! `tower::ServiceExt::oneshot`, and a small fake runner on loopback.

mod execlog;
mod fake_runner;
mod installs;
mod policy;
mod proxy;
mod quota;
mod refusals;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade_bundle::manifest::CapabilityKey;
use palisade_bundle::signing::{SigningKey, TrustBundle};
use palisade_protocol::{ServiceKeyPair, TokenMinter};
use palisade_registry::{Install, Registry};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::{CallerAuthConfig, GatewayConfig, GatewayState, app, mint_dev_token};

/// Where no runner listens.
pub(crate) const NO_RUNNER: &str = "http://127.0.0.1:9";

const ISS: &str = "https://idp.example";
const AUD: &str = "palisade-gateway";
const TENANT: &str = "acme";

pub(crate) struct Harness {
    _dir: Arc<TempDir>,
    pub(crate) registry: Registry,
    caller_keys: ServiceKeyPair,
    service_keys: ServiceKeyPair,
    state: Arc<GatewayState>,
    pub(crate) app: Router,
}

impl Harness {
    async fn new(runner_url: &str) -> Self {
        Self::with_config(runner_url, |_| {}).await
    }

    pub(crate) async fn with_config(
        runner_url: &str,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = palisade_registry::testing::open(dir.path()).await;
        let caller_keys = ServiceKeyPair::generate().unwrap();
        let service_keys = ServiceKeyPair::generate().unwrap();
        let mut config = GatewayConfig::new(
            runner_url,
            CallerAuthConfig::new(ISS, AUD, caller_keys.public_pem.clone()),
        );
        tweak(&mut config);
        let minter = TokenMinter::from_pem(service_keys.private_pem.as_bytes()).unwrap();
        let state = Arc::new(GatewayState::new(config, registry.clone(), minter).unwrap());
        Harness {
            _dir: Arc::new(dir),
            registry,
            caller_keys,
            service_keys,
            app: app(state.clone()),
            state,
        }
    }

    /// A gateway configured by `tweak` in front of a fake runner that checks this
    /// gateway's service tokens.
    async fn with_fake_runner(
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> (Harness, fake_runner::FakeRunner) {
        let h = Harness::new(NO_RUNNER).await;
        let runner = fake_runner::FakeRunner::start(&h.service_keys.public_pem).await;
        // Rebuild the router against the runner, keeping registry and keys.
        (h.rebind(&runner.url, tweak), runner)
    }

    /// The same registry and keys behind a new gateway in front of `runner_url`.
    fn rebind(self, runner_url: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
        let mut config = GatewayConfig::new(
            runner_url,
            CallerAuthConfig::new(ISS, AUD, self.caller_keys.public_pem.clone()),
        );
        tweak(&mut config);
        let minter = TokenMinter::from_pem(self.service_keys.private_pem.as_bytes()).unwrap();
        let state = Arc::new(GatewayState::new(config, self.registry.clone(), minter).unwrap());
        Harness {
            app: app(state.clone()),
            state,
            ..self
        }
    }

    /// A second gateway with this one's configuration and keys, on the same database
    /// through a registry handle of its own (as a gateway in another process would be).
    async fn twin(&self) -> Harness {
        let registry = palisade_registry::testing::open(self._dir.path()).await;
        let minter = TokenMinter::from_pem(self.service_keys.private_pem.as_bytes()).unwrap();
        let state = Arc::new(
            GatewayState::new(self.state.config.clone(), registry.clone(), minter).unwrap(),
        );
        Harness {
            _dir: Arc::clone(&self._dir),
            registry,
            caller_keys: self.caller_keys.clone(),
            service_keys: self.service_keys.clone(),
            app: app(state.clone()),
            state,
        }
    }

    /// Publishes a bundle with `manifest_json` (and an empty component).
    async fn publish(&self, manifest_json: &str) -> palisade_registry::PublishedVersion {
        let manifest: palisade_bundle::manifest::Manifest =
            palisade_bundle::manifest::Manifest::from_json(manifest_json.as_bytes()).unwrap();
        let bundle = palisade_bundle::pack(
            manifest_json.as_bytes(),
            &manifest.component,
            EMPTY_COMPONENT,
            &[],
        )
        .unwrap();
        let key = SigningKey::generate().unwrap();
        let signature = key.sign(&bundle).unwrap();
        let trust = TrustBundle::from_keys(vec![key.public_key().clone()]).unwrap();
        // Each bundle has a key of its own: trust it, and allow it for the id.
        self.registry.trust_key(key.public_key()).await.unwrap();
        self.registry
            .allow_signer(&manifest.id, &key.public_key().fingerprint())
            .await
            .unwrap();
        self.registry
            .publish(&bundle, &signature, &trust)
            .await
            .unwrap()
    }

    /// Publishes a bundle with `manifest_json` (and an empty component) and installs it
    /// (or upgrades the install to it) for `tenant`, directly in the registry.
    async fn install(&self, tenant: &str, manifest_json: &str) -> Install {
        let published = self.publish(manifest_json).await;
        self.registry
            .install(
                tenant,
                &published.extension_id,
                None,
                &CapabilityKey::ALL,
                Default::default(),
            )
            .await
            .unwrap()
    }

    fn token(&self, tenant: &str) -> String {
        self.token_as(tenant, "alice")
    }

    fn token_as(&self, tenant: &str, user: &str) -> String {
        mint_dev_token(
            self.caller_keys.private_pem.as_bytes(),
            ISS,
            AUD,
            tenant,
            user,
            Duration::from_secs(300),
        )
        .unwrap()
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get_as(&self, tenant: &str, uri: &str) -> Reply {
        self.send(
            Request::get(uri)
                .header("authorization", format!("Bearer {}", self.token(tenant)))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

/// The smallest valid component: no imports, no exports.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn request_id(&self) -> &str {
        self.headers["x-request-id"].to_str().unwrap()
    }

    /// Asserts a platform error body with `code` whose request id matches the header.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(
            self.json(),
            serde_json::json!({"error": code, "request_id": self.request_id()})
        );
    }
}

fn sign(keys: &ServiceKeyPair, claims: serde_json::Value) -> String {
    let key = EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}
