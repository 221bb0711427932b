//! Keys and process defaults of real `palisade` processes (a PostgreSQL registry when
//! `PALISADE_TEST_POSTGRES_URL` is set): a gateway seals secrets without holding a key that
//! opens them; `palisade gateway` refuses the development caller key unless `--dev`;
//! runners start from an empty data directory without warnings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_bundle::CapabilityKey;
use palisade_protocol::ServiceKeyPair;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::process::{Server, free_addr};
use crate::support::{Seeder, hello_manifest};

const TENANT: &str = "acme";
const ISSUER: &str = "palisade-dev";
const AUDIENCE: &str = "palisade";
const PROBE: &str = "com.example.secret-probe";

/// Starts `palisade` on `data_dir` at INFO, its log beside the directory.
fn spawn(
    name: &'static str,
    data_dir: &Path,
    database_url: &str,
    addr: &str,
    args: &[&str],
) -> Server {
    let log = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join(format!("{name}.log"));
    Server::spawn(name, data_dir, database_url, addr, log, "info", args)
}

/// Writes `trust.pem` into `data_dir`, publishes `component` with `manifest` into the
/// registry at `database_url` (blobs in `data_dir/objects`) and installs it for
/// [`TENANT`], approving `approved`.
async fn seed(
    data_dir: &Path,
    database_url: &str,
    manifest: &Value,
    component: &str,
    approved: &[CapabilityKey],
) {
    let seeder = Seeder::open(database_url, data_dir.join("objects")).await;
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(data_dir.join("trust.pem"), &seeder.trust_pem).unwrap();
    seeder.install(TENANT, manifest, component, approved).await;
    seeder.registry.pool().close().await;
}

fn probe_manifest() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/secret-probe/manifest.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A caller key pair whose public half is in `dir/caller.pub.pem`.
fn caller_key(dir: &Path) -> (ServiceKeyPair, PathBuf) {
    let keys = ServiceKeyPair::generate().unwrap();
    let path = dir.join("caller.pub.pem");
    std::fs::write(&path, &keys.public_pem).unwrap();
    (keys, path)
}

fn caller_token(keys: &ServiceKeyPair) -> String {
    palisade_gateway::mint_dev_token(
        keys.private_pem.as_bytes(),
        ISSUER,
        AUDIENCE,
        TENANT,
        "user-1",
        Duration::from_secs(600),
    )
    .unwrap()
}

/// The gateway seals secrets through its admin API with nothing but a public key: its data
/// directory holds no key that opens a secret, and the runner (its own data directory)
/// opens what the gateway sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_seals_secrets_without_a_key_that_opens_them() {
    let dir = tempfile::tempdir().unwrap();
    let runner_dir = dir.path().join("runner");
    let gateway_dir = dir.path().join("gateway");
    let database_url = palisade_registry::testing::database_url(dir.path());
    seed(
        &runner_dir,
        &database_url,
        &probe_manifest(),
        "secret-probe",
        &[CapabilityKey::Log, CapabilityKey::Secrets],
    )
    .await;
    let client = reqwest::Client::new();

    let runner_addr = free_addr();
    let mut runner = spawn(
        "runner",
        &runner_dir,
        &database_url,
        &runner_addr,
        &["runner", "--listen", &runner_addr],
    );
    runner.wait_healthy(&client).await;

    // The operator gives the gateway the service key and the runners' public keys only.
    std::fs::create_dir_all(gateway_dir.join("keys")).unwrap();
    for entry in std::fs::read_dir(runner_dir.join("keys")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("service.") || name.ends_with(".pub") {
            std::fs::copy(
                runner_dir.join("keys").join(&name),
                gateway_dir.join("keys").join(&name),
            )
            .unwrap();
        }
    }
    let (caller, caller_pem) = caller_key(dir.path());
    let gateway_addr = free_addr();
    let caller_flag = format!("EdDSA:{}", caller_pem.display());
    let runner_url = runner.url.clone();
    let mut gateway = spawn(
        "gateway",
        &gateway_dir,
        &database_url,
        &gateway_addr,
        &[
            "gateway",
            "--listen",
            &gateway_addr,
            "--runner",
            &runner_url,
            "--caller-key",
            &caller_flag,
        ],
    );
    gateway.wait_healthy(&client).await;

    let admin_token = std::fs::read_to_string(gateway_dir.join("keys/admin.token")).unwrap();
    let value = "ghp_sealed-by-the-gateway";
    let response = client
        .put(format!(
            "{}/admin/v1/tenants/{TENANT}/installs/{PROBE}/secrets/API_TOKEN",
            gateway.url
        ))
        .bearer_auth(admin_token.trim())
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{}\n{}",
        response.text().await.unwrap_or_default(),
        gateway.log_text()
    );

    let got: Value = client
        .get(format!("{}/api/ext/{PROBE}/secret/API_TOKEN", gateway.url))
        .bearer_auth(caller_token(&caller))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["ok"], true, "{got}\n{}", runner.log_text());
    assert_eq!(got["sha256"], hex::encode(Sha256::digest(value.as_bytes())));

    // Nothing in the gateway's data directory opens a secret.
    let keys: Vec<String> = std::fs::read_dir(gateway_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for name in &keys {
        assert!(
            !name.starts_with("secrets.") || name.ends_with(".pub"),
            "the gateway holds {name}: {keys:?}"
        );
    }
}

/// `palisade gateway` with no caller key but the data directory's development key refuses
/// to start unless `--dev`, which it then announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_only_the_development_key_needs_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let database_url = palisade_registry::testing::database_url(dir.path());
    let client = reqwest::Client::new();

    let addr = free_addr();
    let mut refused = spawn(
        "gateway-refused",
        &data_dir,
        &database_url,
        &addr,
        &[
            "gateway",
            "--listen",
            &addr,
            "--runner",
            "http://127.0.0.1:9",
        ],
    );
    let status = refused.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "{}", refused.log_text());
    let log = refused.log_text();
    assert!(
        log.contains("no caller key is configured") && log.contains("--dev"),
        "{log}"
    );

    let addr = free_addr();
    let mut dev = spawn(
        "gateway-dev",
        &data_dir,
        &database_url,
        &addr,
        &[
            "gateway",
            "--dev",
            "--listen",
            &addr,
            "--runner",
            "http://127.0.0.1:9",
        ],
    );
    dev.wait_healthy(&client).await;
    assert!(
        dev.warnings()
            .iter()
            .any(|line| line.contains("development mode (--dev)")),
        "{}",
        dev.log_text()
    );
}

/// With `[runner] metrics_token_file` set, the runner's `/metrics` answers only a scraper
/// presenting that bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_serves_metrics_only_with_the_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let database_url = palisade_registry::testing::database_url(dir.path());
    seed(
        &data_dir,
        &database_url,
        &hello_manifest(),
        "hello",
        &[CapabilityKey::Log],
    )
    .await;
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-secret-123\n").unwrap();
    let config = dir.path().join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nmetrics_token_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let addr = free_addr();
    let config_arg = config.display().to_string();
    let mut runner = spawn(
        "runner",
        &data_dir,
        &database_url,
        &addr,
        &["--config", &config_arg, "runner", "--listen", &addr],
    );
    runner.wait_healthy(&client).await;
    let url = format!("{}/metrics", runner.url);

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client
        .get(&url)
        .bearer_auth("scrape-secret-124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let scraped = client
        .get(&url)
        .bearer_auth("scrape-secret-123")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().ends_with("# EOF\n"));
}

/// GETs hello through the gateway at `gateway` with a development token of `data_dir`.
async fn call_hello(client: &reqwest::Client, gateway: &str, data_dir: &Path) -> StatusCode {
    let pem = std::fs::read(data_dir.join("keys/caller-issuer.key.pem")).unwrap();
    let token = palisade_gateway::mint_dev_token(
        &pem,
        ISSUER,
        AUDIENCE,
        TENANT,
        "user-1",
        Duration::from_secs(600),
    )
    .unwrap();
    client
        .get(format!("{gateway}/api/ext/com.example.hello/hello/world"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// The artifacts a process cached for itself in `data_dir`.
fn cached_artifacts(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("cache/artifacts"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// `palisade runner` and `palisade up`, on `--database-url` and a data directory holding
/// only what publishing wrote (`trust.pem`, `objects/`), create what they need at start:
/// the first load caches its artifact and nothing is logged at WARN or ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_and_up_start_from_an_empty_data_directory_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // palisade runner (and a gateway in front of it).
    let data_dir = dir.path().join("runner");
    let database_url = palisade_registry::testing::database_url(&data_dir);
    seed(
        &data_dir,
        &database_url,
        &hello_manifest(),
        "hello",
        &[CapabilityKey::Log],
    )
    .await;
    let runner_addr = free_addr();
    let mut runner = spawn(
        "runner",
        &data_dir,
        &database_url,
        &runner_addr,
        &["runner", "--listen", &runner_addr],
    );
    runner.wait_healthy(&client).await;
    assert!(data_dir.join("cache/artifacts").is_dir());
    let gateway_addr = free_addr();
    let runner_url = runner.url.clone();
    let mut gateway = spawn(
        "gateway",
        &data_dir,
        &database_url,
        &gateway_addr,
        &[
            "gateway",
            "--dev",
            "--listen",
            &gateway_addr,
            "--runner",
            &runner_url,
        ],
    );
    gateway.wait_healthy(&client).await;
    // Several first calls at once: each compiles and caches the same artifact.
    let calls = (0..4).map(|_| call_hello(&client, &gateway.url, &data_dir));
    for status in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{}", runner.log_text());
    }
    assert_eq!(cached_artifacts(&data_dir), 1);
    assert_eq!(
        runner.warnings(),
        Vec::<String>::new(),
        "{}",
        runner.log_text()
    );

    // palisade up.
    let data_dir = dir.path().join("up");
    let database_url = palisade_registry::testing::database_url(&data_dir);
    seed(
        &data_dir,
        &database_url,
        &hello_manifest(),
        "hello",
        &[CapabilityKey::Log],
    )
    .await;
    let (gateway_addr, runner_addr) = (free_addr(), free_addr());
    let mut up = spawn(
        "up",
        &data_dir,
        &database_url,
        &gateway_addr,
        &[
            "up",
            "--gateway-addr",
            &gateway_addr,
            "--runner-addr",
            &runner_addr,
        ],
    );
    up.wait_healthy(&client).await;
    assert!(data_dir.join("cache/artifacts").is_dir());
    assert_eq!(
        call_hello(&client, &up.url, &data_dir).await,
        StatusCode::OK,
        "{}",
        up.log_text()
    );
    assert_eq!(cached_artifacts(&data_dir), 1);
    assert_eq!(up.warnings(), Vec::<String>::new(), "{}", up.log_text());
}
