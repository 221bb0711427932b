//! Extension UIs end to end: the admin API answers each version's and install's `ui_url`,
//! and that URL serves the entry document from the runner, with its content security
//! policy; another extension's hash and a traversal are not found.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Options, Platform, guest};

const WIDGET: &str = "com.example.widget";
const TENANT: &str = "acme";
const ENTRY: &str = "<!doctype html><title>widget</title>";

/// A platform whose gateway names its runner as the UIs' public base.
async fn platform() -> Platform {
    Platform::start_with(Options {
        gateway: |config| config.ui_public_base = config.runner_urls.first().cloned(),
        ..Options::default()
    })
    .await
}

/// A bundle of the hello component with a UI tree.
fn widget_bundle() -> Vec<u8> {
    let manifest = json!({
        "id": WIDGET,
        "name": "Widget",
        "publisher": "Palisade tests",
        "version": "1.0.0",
        "runtime": "wasi-http@0.2",
        "component": "hello.wasm",
        "capabilities": { "log": true },
        "ui": { "entry": "index.html" },
    });
    palisade_bundle::pack(
        manifest.to_string().as_bytes(),
        "hello.wasm",
        &guest("hello"),
        &[
            ("index.html".to_owned(), ENTRY.as_bytes().to_vec()),
            ("app.js".to_owned(), b"void 0;".to_vec()),
        ],
    )
    .unwrap()
}

async fn admin_get(platform: &Platform, path: &str) -> Value {
    let response = platform
        .client
        .get(format!("http://{}/admin/v1{path}", platform.gateway))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_admin_api_names_the_ui_url_and_the_runner_serves_it() {
    let platform = platform().await;
    let published = platform.publish(&widget_bundle()).await;
    let expected = format!(
        "http://{}/ext-ui/{WIDGET}/{}/index.html",
        platform.runner, published.content_hash
    );
    let versions = admin_get(&platform, &format!("/extensions/{WIDGET}/versions")).await;
    assert_eq!(versions[0]["ui_url"], expected.as_str(), "{versions}");

    platform
        .registry
        .install(
            TENANT,
            WIDGET,
            None,
            &[palisade_bundle::CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();
    let install = admin_get(&platform, &format!("/tenants/{TENANT}/installs/{WIDGET}")).await;
    assert_eq!(install["ui_url"], expected.as_str(), "{install}");
    assert_eq!(
        install["content_hash"],
        published.content_hash.to_string().as_str()
    );

    let response = platform.client.get(&expected).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src 'none'"), "{csp}");
    assert_eq!(response.text().await.unwrap(), ENTRY);

    // HEAD answers the headers alone.
    let head = platform.client.head(&expected).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers().contains_key("etag"));

    // Another extension's hash, and a traversal, are not found.
    let hello = platform
        .publish(&crate::support::bundle(
            &crate::support::hello_manifest(),
            &guest("hello"),
        ))
        .await;
    let base = format!("http://{}/ext-ui/{WIDGET}", platform.runner);
    for url in [
        format!("{base}/{}/index.html", hello.content_hash),
        format!("{base}/{}/%2e%2e/index.html", published.content_hash),
    ] {
        let response = platform.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
    }
}

#[tokio::test]
async fn an_install_read_of_nothing_is_404() {
    let platform = platform().await;
    let response = platform
        .client
        .get(format!(
            "http://{}/admin/v1/tenants/{TENANT}/installs/{WIDGET}",
            platform.gateway
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
