#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;

use http_body_util::{BodyExt, Empty};
use palisade_bundle::manifest::HttpCapability;

use super::*;

fn grants(allow: &[&str]) -> Capabilities {
    Capabilities {
        http: Some(HttpCapability {
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }),
        ..Capabilities::default()
    }
}

fn loopback() -> EgressPolicy {
    EgressPolicy {
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        ..EgressPolicy::default()
    }
}

fn soon() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_secs(10)
}

fn request(uri: &str) -> http::Request<WasiBody> {
    http::Request::get(uri)
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap()
}

async fn send(hooks: &mut EgressHooks, uri: &str) -> Result<u16, Error> {
    let future = hooks.send_request(request(uri), None, Box::new(async { Ok(()) }));
    let (response, io) = Pin::from(future).await?;
    tokio::spawn(Pin::from(io));
    Ok(response.status().as_u16())
}

async fn upstream() -> SocketAddr {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn hooks_without_a_grant_deny_everything() {
    let mut hooks = EgressHooks::deny_all();
    let err = send(&mut hooks, "https://api.github.com/")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");

    let mut hooks = EgressHooks::for_call(&loopback(), &Capabilities::default(), soon());
    let err = send(&mut hooks, "https://api.github.com/")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");
}

#[tokio::test]
async fn allowed_origin_is_sent_and_others_are_denied() {
    let addr = upstream().await;
    let origin = format!("http://{addr}");
    let mut hooks = EgressHooks::for_call(&loopback(), &grants(&[&origin]), soon());
    assert_eq!(send(&mut hooks, &format!("{origin}/")).await.unwrap(), 200);
    assert!(hooks.counters().bytes_in() > 0);
    assert_eq!(hooks.counters().requests(), 1);

    let other_port = format!("http://127.0.0.1:{}/", addr.port() + 1);
    let err = send(&mut hooks, &other_port).await.unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");
    let err = send(&mut hooks, "https://api.github.com/")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");
    assert_eq!(
        hooks.counters().requests(),
        1,
        "denied requests are not counted"
    );
}

#[tokio::test]
async fn allowed_name_resolving_to_a_refused_address_fails_closed() {
    let addr = upstream().await;
    let origin = format!("http://localhost:{}", addr.port());
    let mut hooks = EgressHooks::for_call(&EgressPolicy::default(), &grants(&[&origin]), soon());
    let err = send(&mut hooks, &format!("{origin}/")).await.unwrap_err();
    assert!(matches!(err, Error::DestinationIpProhibited), "{err}");

    let mut hooks = EgressHooks::for_call(&loopback(), &grants(&[&origin]), soon());
    assert_eq!(send(&mut hooks, &format!("{origin}/")).await.unwrap(), 200);
}

#[tokio::test]
async fn operator_policy_restricts_the_allow_list() {
    let addr = upstream().await;
    let origin = format!("http://{addr}");
    let deny_all = EgressPolicy {
        deny_all: true,
        ..loopback()
    };
    let mut hooks = EgressHooks::for_call(&deny_all, &grants(&[&origin]), soon());
    let err = send(&mut hooks, &format!("{origin}/")).await.unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");

    let deny_host = EgressPolicy {
        deny_hosts: vec![super::super::egress::HostPattern::parse("127.0.0.1").unwrap()],
        ..loopback()
    };
    let mut hooks = EgressHooks::for_call(&deny_host, &grants(&[&origin]), soon());
    let err = send(&mut hooks, &format!("{origin}/")).await.unwrap_err();
    assert!(matches!(err, Error::HttpRequestDenied), "{err}");
}

#[tokio::test]
async fn requests_per_call_are_bounded() {
    let addr = upstream().await;
    let origin = format!("http://{addr}");
    let policy = EgressPolicy {
        max_requests_per_call: 1,
        ..loopback()
    };
    let mut hooks = EgressHooks::for_call(&policy, &grants(&[&origin]), soon());
    assert_eq!(send(&mut hooks, &format!("{origin}/")).await.unwrap(), 200);
    let err = send(&mut hooks, &format!("{origin}/")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionLimitReached), "{err}");
}

#[tokio::test]
async fn a_passed_deadline_ends_the_exchange_at_once() {
    let addr = upstream().await;
    let origin = format!("http://{addr}");
    let past = std::time::Instant::now();
    let mut hooks = EgressHooks::for_call(&loopback(), &grants(&[&origin]), past);
    let err = send(&mut hooks, &format!("{origin}/")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionTimeout), "{err}");
}

#[test]
fn hop_by_hop_and_proxy_headers_are_forbidden() {
    let filter = EgressHooks::deny_all().forbidden_header_filter();
    for name in [
        "host",
        "proxy-authorization",
        "x-forwarded-for",
        "transfer-encoding",
    ] {
        assert!(filter(&HeaderName::from_static(name)), "{name}");
    }
    for name in ["authorization", "accept", "user-agent"] {
        assert!(!filter(&HeaderName::from_static(name)), "{name}");
    }
}
