use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::dev::{DevCertificates, generate};
use super::*;

fn hosts() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Files {
    server: ServerTlsFiles,
    client: ClientTlsFiles,
}

fn files(dir: &Path, certs: &DevCertificates, mutual: bool, client_cert: bool) -> Files {
    let ca = write(dir, "ca.pem", &certs.ca.cert);
    let server = ServerTlsFiles {
        cert: write(dir, "runner.pem", &certs.runner.cert),
        key: write(dir, "runner.key", &certs.runner.key),
        client_ca: mutual.then(|| ca.clone()),
    };
    let (cert, key) = if client_cert {
        (
            Some(write(dir, "gateway.pem", &certs.gateway.cert)),
            Some(write(dir, "gateway.key", &certs.gateway.key)),
        )
    } else {
        (None, None)
    };
    Files {
        server,
        client: ClientTlsFiles { ca, cert, key },
    }
}

/// A TLS server answering `ok` on every path; its address.
async fn serve(tls: ServerTls) -> std::net::SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, tls).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GET `https://host:port/` through a [`HopConnector`] with `tls`.
async fn get(tls: Option<ClientTls>, url: &str) -> Result<String, String> {
    let client: Client<HopConnector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(HopConnector::new(HttpConnector::new(), tls));
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

#[tokio::test]
async fn mutual_tls_serves_a_client_with_a_certificate_and_refuses_one_without() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(&hosts()).unwrap();
    let with_cert = files(dir.path(), &certs, true, true);
    let server = ServerTls::load(&with_cert.server).unwrap();
    assert!(server.is_mutual());
    let addr = serve(server).await;

    let client = ClientTls::load(&with_cert.client).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}/x", addr.port());
        assert_eq!(get(Some(client.clone()), &url).await.unwrap(), "ok");
    }

    let no_cert = ClientTls::load(&ClientTlsFiles {
        cert: None,
        key: None,
        ..with_cert.client.clone()
    })
    .unwrap();
    let refused = get(
        Some(no_cert),
        &format!("https://127.0.0.1:{}/", addr.port()),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP to a TLS port gets nothing either.
    let plain = get(None, &format!("http://127.0.0.1:{}/", addr.port())).await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn the_client_refuses_a_runner_its_ca_did_not_sign_or_that_names_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(&["runner.internal".to_owned()]).unwrap();
    let server_files = files(dir.path(), &certs, false, false);
    let addr = serve(ServerTls::load(&server_files.server).unwrap()).await;

    // Right CA, wrong name: 127.0.0.1 is not in the certificate.
    let client = ClientTls::load(&server_files.client).unwrap();
    let wrong_name = get(Some(client), &format!("https://127.0.0.1:{}/", addr.port())).await;
    let error = wrong_name.unwrap_err();
    assert!(error.contains("NotValidForName"), "{error}");

    // Another CA.
    let other_dir = tempfile::tempdir().unwrap();
    let other = generate(&hosts()).unwrap();
    let other_client =
        ClientTls::load(&files(other_dir.path(), &other, false, false).client).unwrap();
    let error = get(
        Some(other_client),
        &format!("https://127.0.0.1:{}/", addr.port()),
    )
    .await
    .unwrap_err();
    // Both CAs have the same name, so the chain is tried and its signature fails.
    assert!(error.contains("InvalidCertificate"), "{error}");

    // No TLS configured for an https URL.
    let error = get(None, &format!("https://127.0.0.1:{}/", addr.port()))
        .await
        .unwrap_err();
    assert!(error.contains("needs a TLS configuration"), "{error}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate(&hosts()).unwrap();
    let first_files = files(dir.path(), &first, false, false);
    let addr = serve(ServerTls::load(&first_files.server).unwrap()).await;
    let url = format!("https://127.0.0.1:{}/", addr.port());

    let second_dir = tempfile::tempdir().unwrap();
    let second = generate(&hosts()).unwrap();
    let second_client =
        ClientTls::load(&files(second_dir.path(), &second, false, false).client).unwrap();
    assert!(get(Some(second_client.clone()), &url).await.is_err());

    // A half-written file is not taken: the first certificate stays.
    std::fs::write(
        &first_files.server.cert,
        "-----BEGIN CERTIFICATE-----\nAAAA",
    )
    .unwrap();
    tokio::time::sleep(RELOAD_INTERVAL * 2).await;
    let first_client = ClientTls::load(&first_files.client).unwrap();
    assert_eq!(get(Some(first_client), &url).await.unwrap(), "ok");

    // The renewed pair is written: it is served within two checks.
    std::fs::write(&first_files.server.cert, &second.runner.cert).unwrap();
    std::fs::write(&first_files.server.key, &second.runner.key).unwrap();
    let deadline = tokio::time::Instant::now() + RELOAD_INTERVAL * 3;
    loop {
        match get(Some(second_client.clone()), &url).await {
            Ok(body) => {
                assert_eq!(body, "ok");
                break;
            }
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("the renewed certificate was not served: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[test]
fn bad_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(&hosts()).unwrap();
    let other = generate(&hosts()).unwrap();
    let good = files(dir.path(), &certs, true, true);

    let missing = ServerTlsFiles {
        cert: dir.path().join("nope.pem"),
        ..good.server.clone()
    };
    let error = ServerTls::load(&missing).unwrap_err().to_string();
    assert!(error.contains("nope.pem"), "{error}");

    let empty = write(dir.path(), "empty.pem", "");
    let error = ServerTls::load(&ServerTlsFiles {
        cert: empty.clone(),
        ..good.server.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("empty.pem") && error.contains("CERTIFICATE"),
        "{error}"
    );
    let error = ServerTls::load(&ServerTlsFiles {
        key: empty,
        ..good.server.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("empty.pem") && error.contains("PRIVATE KEY"),
        "{error}"
    );

    let wrong_key = write(dir.path(), "other.key", &other.runner.key);
    let error = ServerTls::load(&ServerTlsFiles {
        key: wrong_key.clone(),
        ..good.server.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("runner.pem") && error.contains("other.key"),
        "{error}"
    );

    let error = ClientTls::load(&ClientTlsFiles {
        key: None,
        ..good.client.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("set both or neither"), "{error}");
    let error = ClientTls::load(&ClientTlsFiles {
        key: Some(wrong_key),
        ..good.client.clone()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("gateway.pem") && error.contains("other.key"),
        "{error}"
    );

    assert!(generate(&[]).is_err());
}
