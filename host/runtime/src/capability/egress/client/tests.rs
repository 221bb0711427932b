#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{Empty, Full, StreamBody};
use hyper::body::Frame;

use super::*;

/// A local upstream with one route per behaviour; counts the requests it answers.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/redirect",
            get(|| async {
                http::Response::builder()
                    .status(302)
                    .header("location", "http://elsewhere.example/")
                    .body(AxumBody::empty())
                    .unwrap()
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 10_000] }))
        .route(
            "/stream-big",
            get(|| async {
                let chunks =
                    (0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1000])));
                AxumBody::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/slow-head",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/stall-body",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"first"))
                });
                let never = futures::stream::pending();
                AxumBody::from_stream(futures::StreamExt::chain(first, never))
            }),
        )
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn loopback_policy() -> EgressPolicy {
    EgressPolicy {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        max_response_bytes: 4096,
        max_request_bytes: 100,
        ..EgressPolicy::default()
    }
}

fn prepare(addr: SocketAddr, policy: EgressPolicy, https: bool) -> (Exchange, Arc<EgressCounters>) {
    let counters = Arc::new(EgressCounters::default());
    let exchange = Exchange {
        target: Target {
            https,
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        policy: Arc::new(policy),
        counters: counters.clone(),
        tls: default_tls().unwrap(),
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            first_byte: None,
            between_bytes: None,
            deadline: Instant::now() + Duration::from_secs(10),
        },
    };
    (exchange, counters)
}

fn get_request(addr: SocketAddr, path: &str) -> http::Request<WasiBody> {
    http::Request::get(format!("http://{addr}{path}"))
        .header("host", addr.to_string())
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap()
}

async fn body_of(response: http::Response<WasiBody>) -> Result<Bytes, Error> {
    Ok(response.into_body().collect().await?.to_bytes())
}

async fn run(
    exchange: Exchange,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    let (response, io) = send(exchange, request).await?;
    tokio::spawn(Pin::from(io));
    Ok(response)
}

#[tokio::test]
async fn allowed_exchange_returns_status_body_and_counts_bytes() {
    let (addr, hits) = upstream().await;
    let (exchange, counters) = prepare(addr, loopback_policy(), false);
    let response = run(exchange, get_request(addr, "/ok")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&body_of(response).await.unwrap()[..], b"hello");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(counters.bytes_out() > 20, "{}", counters.bytes_out());
    assert!(counters.bytes_in() > 20, "{}", counters.bytes_in());
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let (addr, hits) = upstream().await;
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let response = run(exchange, get_request(addr, "/redirect")).await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "http://elsewhere.example/");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_address_is_never_connected() {
    let (addr, hits) = upstream().await;
    let (exchange, counters) = prepare(addr, EgressPolicy::default(), false);
    let err = run(exchange, get_request(addr, "/ok")).await.unwrap_err();
    assert!(matches!(err, Error::DestinationIpProhibited), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(counters.bytes_out(), 0);
}

#[tokio::test]
async fn declared_response_over_the_cap_fails_before_the_body() {
    let (addr, _) = upstream().await;
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let err = run(exchange, get_request(addr, "/big")).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpResponseBodySize(Some(4096))),
        "{err}"
    );
}

#[tokio::test]
async fn streamed_response_over_the_cap_is_cut() {
    let (addr, _) = upstream().await;
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let response = run(exchange, get_request(addr, "/stream-big"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let err = body_of(response).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpResponseBodySize(Some(4096))),
        "{err}"
    );
}

#[tokio::test]
async fn first_byte_timeout_and_deadline_bound_the_wait() {
    let (addr, _) = upstream().await;
    let started = Instant::now();
    let (mut exchange, _) = prepare(addr, loopback_policy(), false);
    exchange.timeouts.first_byte = Some(Duration::from_millis(100));
    let err = run(exchange, get_request(addr, "/slow-head"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionReadTimeout), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let started = Instant::now();
    let (mut exchange, _) = prepare(addr, loopback_policy(), false);
    exchange.timeouts.deadline = Instant::now() + Duration::from_millis(200);
    let err = run(exchange, get_request(addr, "/slow-head"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectionReadTimeout), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn stalled_body_ends_by_between_bytes_timeout_or_deadline() {
    let (addr, _) = upstream().await;
    let (mut exchange, _) = prepare(addr, loopback_policy(), false);
    exchange.timeouts.between_bytes = Some(Duration::from_millis(100));
    let response = run(exchange, get_request(addr, "/stall-body"))
        .await
        .unwrap();
    let err = body_of(response).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionReadTimeout), "{err}");

    let (mut exchange, _) = prepare(addr, loopback_policy(), false);
    exchange.timeouts.deadline = Instant::now() + Duration::from_millis(300);
    let response = run(exchange, get_request(addr, "/stall-body"))
        .await
        .unwrap();
    let err = body_of(response).await.unwrap_err();
    assert!(matches!(err, Error::HttpResponseTimeout), "{err}");
}

fn post_request(
    addr: SocketAddr,
    body: WasiBody,
    length: Option<usize>,
) -> http::Request<WasiBody> {
    let mut builder =
        http::Request::post(format!("http://{addr}/echo")).header("host", addr.to_string());
    if let Some(length) = length {
        builder = builder.header("content-length", length);
    }
    builder.body(body).unwrap()
}

#[tokio::test]
async fn request_body_is_capped() {
    let (addr, _) = upstream().await;
    let small = Full::new(Bytes::from(vec![b'a'; 100]))
        .map_err(|never| match never {})
        .boxed_unsync();
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let response = run(exchange, post_request(addr, small, Some(100)))
        .await
        .unwrap();
    assert_eq!(&body_of(response).await.unwrap()[..], b"100");

    let declared = Full::new(Bytes::from(vec![b'a'; 101]))
        .map_err(|never| match never {})
        .boxed_unsync();
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let err = run(exchange, post_request(addr, declared, Some(101)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HttpRequestBodySize(Some(100))),
        "{err}"
    );

    let chunks = (0..5).map(|_| Ok::<_, Error>(Frame::data(Bytes::from(vec![b'b'; 30]))));
    let streamed = StreamBody::new(futures::stream::iter(chunks)).boxed_unsync();
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let err = run(exchange, post_request(addr, streamed, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HttpRequestBodySize(Some(100))),
        "{err}"
    );
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (exchange, _) = prepare(addr, loopback_policy(), false);
    let err = run(exchange, get_request(addr, "/")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionRefused), "{err}");
}

#[tokio::test]
async fn https_to_a_plain_server_fails_in_tls() {
    let (addr, hits) = upstream().await;
    let (exchange, _) = prepare(addr, loopback_policy(), true);
    let err = run(exchange, get_request(addr, "/ok")).await.unwrap_err();
    assert!(
        matches!(err, Error::TlsProtocolError | Error::TlsCertificateError),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn certificates_are_checked_against_the_requested_name() {
    let name = |host: &str| {
        server_name(&Target {
            https: true,
            host: host.into(),
            port: 443,
        })
        .unwrap()
    };
    assert_eq!(
        name("api.github.com"),
        ServerName::try_from("api.github.com").unwrap()
    );
    assert_eq!(
        name("[::1]"),
        ServerName::IpAddress("::1".parse::<std::net::IpAddr>().unwrap().into())
    );
}

#[test]
fn origin_form_keeps_path_and_query_only() {
    let request = http::Request::get("https://api.github.com/repos/a/b?x=1")
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap();
    let sent = origin_form(request, 10).unwrap();
    assert_eq!(sent.uri().to_string(), "/repos/a/b?x=1");
    assert_eq!(sent.uri().authority(), None);
}

/// A TLS upstream on 127.0.0.1 whose certificate, issued by a fresh test CA, names only
/// `names`; returns its address and the CA certificate.
async fn tls_upstream(names: &[&str]) -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    use hyper::service::service_fn;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"secure"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.der().clone())
}

fn tls_exchange(
    addr: SocketAddr,
    host: &str,
    ca: Option<rustls::pki_types::CertificateDer<'static>>,
) -> Exchange {
    let (mut exchange, _) = prepare(addr, loopback_policy(), true);
    exchange.target.host = host.into();
    if let Some(ca) = ca {
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        exchange.tls = Arc::new(tls_config(roots).unwrap());
    }
    exchange
}

fn tls_get(addr: SocketAddr, host: &str) -> http::Request<WasiBody> {
    http::Request::get(format!("https://{host}:{}/", addr.port()))
        .header("host", format!("{host}:{}", addr.port()))
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap()
}

#[tokio::test]
async fn https_verifies_the_certificate_against_the_requested_host_name() {
    let (addr, ca) = tls_upstream(&["localhost"]).await;

    // Trusted CA, name in the certificate: the exchange succeeds over the checked address.
    let exchange = tls_exchange(addr, "localhost", Some(ca.clone()));
    let response = run(exchange, tls_get(addr, "localhost")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&body_of(response).await.unwrap()[..], b"secure");

    // Same server and address, but the requested name is the IP literal, which the
    // certificate does not name.
    let exchange = tls_exchange(addr, "127.0.0.1", Some(ca));
    let err = run(exchange, tls_get(addr, "127.0.0.1")).await.unwrap_err();
    assert!(matches!(err, Error::TlsCertificateError), "{err}");

    // The default roots do not trust the test CA.
    let exchange = tls_exchange(addr, "localhost", None);
    let err = run(exchange, tls_get(addr, "localhost")).await.unwrap_err();
    assert!(matches!(err, Error::TlsCertificateError), "{err}");
}
