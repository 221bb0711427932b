//! TLS between nodes, with real `palisade` processes: certificates made by `palisade certs
//! dev`, a runner that requires a client certificate (mutual TLS), and a gateway that
//! calls it over `https://` with its own. A peer without a certificate is refused by the
//! runner during the handshake, and so is plain HTTP; a gateway without a certificate
//! answers 503.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_bundle::CapabilityKey;
use palisade_protocol::tls::{ClientTls, ClientTlsFiles, HopConnector};
use reqwest::StatusCode;

use crate::process::{Server, dev_caller_token, free_addr};
use crate::support::{Seeder, hello_manifest, palisade_binary};

const TENANT: &str = "acme";

fn spawn(name: &'static str, data_dir: &Path, probe_addr: &str, args: &[&str]) -> Server {
    let database_url = palisade_registry::testing::database_url(data_dir);
    let log = data_dir.join(format!("{name}.log"));
    Server::spawn(name, data_dir, &database_url, probe_addr, log, "info", args)
}

/// GET `url` through the hop's own connector with `tls`.
async fn get(tls: ClientTls, url: &str) -> Result<StatusCode, String> {
    let client: Client<HopConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(HopConnector::new(HttpConnector::new(), Some(tls)));
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hop_runs_over_mutual_tls_and_a_peer_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path();
    let seeder = Seeder::open(
        &palisade_registry::testing::database_url(data_dir),
        data_dir.join("objects"),
    )
    .await;
    seeder
        .install(TENANT, &hello_manifest(), "hello", &[CapabilityKey::Log])
        .await;

    let certs = data_dir.join("certs");
    let made = Command::new(palisade_binary())
        .args(["certs", "dev", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let certs = certs.display();
    let config = data_dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\ntls_cert = \"{certs}/runner.pem\"\ntls_key = \"{certs}/runner.key\"\n\
             tls_client_ca = \"{certs}/ca.pem\"\n\n\
             [gateway]\nrunner_tls_ca = \"{certs}/ca.pem\"\n\
             runner_tls_cert = \"{certs}/gateway.pem\"\nrunner_tls_key = \"{certs}/gateway.key\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let check = Command::new(palisade_binary())
        .args(["config", "check", config])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let client = reqwest::Client::new();
    let runner_addr = free_addr();
    let probe_addr = free_addr();
    let mut runner = spawn(
        "runner",
        data_dir,
        &probe_addr,
        &[
            "--config",
            config,
            "runner",
            "--listen",
            &runner_addr,
            "--metrics-listen",
            &probe_addr,
        ],
    );
    runner.wait_healthy(&client).await;
    let runner_url = format!("https://{runner_addr}");

    let gateway_addr = free_addr();
    let mut gateway = spawn(
        "gateway",
        data_dir,
        &gateway_addr,
        &[
            "--config",
            config,
            "gateway",
            "--dev",
            "--runner",
            &runner_url,
            "--listen",
            &gateway_addr,
        ],
    );
    gateway.wait_healthy(&client).await;
    let token = dev_caller_token(data_dir, TENANT);
    let hello = format!("{}/api/ext/com.example.hello/hello/tls", gateway.url);
    let answer = client.get(&hello).bearer_auth(&token).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "{}", gateway.log_text());
    assert!(answer.text().await.unwrap().contains("tls"));
    // The gateway's readiness needs a healthy runner: its health checks go over mTLS too.
    let ready = client
        .get(format!("{}/readyz", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    // A client that trusts the runner but has no certificate is refused.
    let no_cert = ClientTls::load(&ClientTlsFiles {
        ca: format!("{certs}/ca.pem").into(),
        cert: None,
        key: None,
    })
    .unwrap();
    let refused = get(no_cert, &format!("{runner_url}/healthz")).await;
    assert!(refused.is_err(), "{refused:?}");
    // So is plain HTTP.
    let plain = client
        .get(format!("http://{runner_addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // With the gateway's certificate, the same request is served.
    let with_cert = ClientTls::load(&ClientTlsFiles {
        ca: format!("{certs}/ca.pem").into(),
        cert: Some(format!("{certs}/gateway.pem").into()),
        key: Some(format!("{certs}/gateway.key").into()),
    })
    .unwrap();
    assert_eq!(
        get(with_cert, &format!("{runner_url}/healthz")).await,
        Ok(StatusCode::OK)
    );

    // A gateway that trusts the runner but holds no certificate cannot reach it.
    let bare_config = data_dir.join("bare.toml");
    std::fs::write(
        &bare_config,
        format!("[gateway]\nrunner_tls_ca = \"{certs}/ca.pem\"\n"),
    )
    .unwrap();
    let bare_addr = free_addr();
    let mut bare = spawn(
        "bare-gateway",
        data_dir,
        &bare_addr,
        &[
            "--config",
            bare_config.to_str().unwrap(),
            "gateway",
            "--dev",
            "--runner",
            &runner_url,
            "--listen",
            &bare_addr,
        ],
    );
    bare.wait_healthy(&client).await;
    let answer = client
        .get(format!("{}/api/ext/com.example.hello/hello/tls", bare.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(bare.terminate().await.success());

    assert!(
        runner.log_text().contains("TLS handshake refused"),
        "{}",
        runner.log_text()
    );
    assert!(gateway.terminate().await.success());
    assert!(runner.terminate().await.success());
}
