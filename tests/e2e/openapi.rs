//! docs/openapi.yaml against the running servers: every documented path and method is
//! answered with a status the document lists for it (unauthenticated, authenticated with
//! nothing to find, and with the admin API switched off), and every admin route of the
//! router is documented.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use palisade_gateway::{CallerAuthConfig, GatewayConfig, GatewayState};
use palisade_protocol::TokenMinter;
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, AUDIENCE, ISSUER, Platform, serve};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// A concrete path for a template, naming things that do not exist.
fn concrete(template: &str) -> String {
    template
        .replace("{extension_id}", "com.example.absent")
        .replace("{tenant_id}", "acme")
        .replace("{name}", "api_key")
        .replace("{delivery_id}", "absent-delivery")
        .replace("{path}", "hello")
}

/// (template, method, operation, server descriptions)
fn operations(doc: &Value) -> Vec<(String, String, Value, Vec<String>)> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let servers: Vec<String> = item
            .get("servers")
            .unwrap_or(&doc["servers"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["description"].as_str().unwrap().to_owned())
            .collect();
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((
                    template.clone(),
                    method.to_owned(),
                    op.clone(),
                    servers.clone(),
                ));
            }
        }
    }
    out
}

fn schemes(op: &Value) -> Vec<String> {
    op.get("security")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .flat_map(|req| req.as_object().unwrap().keys().cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn listed(op: &Value, status: u16) -> bool {
    op["responses"].get(status.to_string()).is_some()
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = client.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_documented_operation_answers_a_documented_status() {
    let platform = Platform::start().await;
    let doc = document();
    let client = reqwest::Client::new();
    // The same registry behind a gateway without an admin token.
    let closed = serve(palisade_gateway::app(Arc::new(
        GatewayState::new(
            GatewayConfig::new(
                format!("http://{}", platform.runner),
                CallerAuthConfig::new(ISSUER, AUDIENCE, platform.caller_keys.public_pem.clone()),
            ),
            platform.registry.clone(),
            TokenMinter::from_pem(platform.service_keys.private_pem.as_bytes()).unwrap(),
        )
        .unwrap(),
    )))
    .await;
    let gateway = format!("http://{}", platform.gateway);
    let runner = format!("http://{}", platform.runner);
    let closed = format!("http://{closed}");
    let caller_token = platform.token("acme");

    let operations = operations(&doc);
    assert!(operations.len() >= 15, "{}", operations.len());
    for (template, method, op, servers) in &operations {
        let path = concrete(template);
        let schemes = schemes(op);
        for server in servers {
            let base = match server.as_str() {
                "gateway" => &gateway,
                "runner" => &runner,
                other => panic!("{template}: unknown server `{other}`"),
            };
            let what = format!("{method} {template} on the {server}");

            let anonymous = send(&client, base, method, &path, None).await;
            assert!(
                listed(op, anonymous),
                "{what}: {anonymous} is not documented"
            );
            if schemes.is_empty() {
                assert_eq!(anonymous, 200, "{what}");
            } else {
                assert_eq!(anonymous, 401, "{what}: without credentials");
            }

            if schemes.iter().any(|s| s == "adminToken") {
                let status = send(&client, base, method, &path, Some(ADMIN_TOKEN)).await;
                assert!(
                    listed(op, status),
                    "{what}: {status} (admin) is not documented"
                );
                assert!(status < 500, "{what}: {status}");
                let status = send(&client, &closed, method, &path, Some(ADMIN_TOKEN)).await;
                assert_eq!(status, 404, "{what}: with the admin API off");
                assert!(listed(op, 404), "{what}: 404 is not documented");
            }
            if schemes.iter().any(|s| s == "callerJwt") {
                let status = send(&client, base, method, &path, Some(&caller_token)).await;
                assert_eq!(status, 404, "{what}: nothing installed");
                assert!(listed(op, status), "{what}: {status} is not documented");
            }
        }
    }
}

#[tokio::test]
async fn every_admin_route_is_documented_and_nothing_else() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(template, ..)| template.starts_with("/admin/"))
        .map(|(template, method, ..)| (method.to_uppercase(), template))
        .collect();
    let routed: BTreeSet<(String, String)> = palisade_gateway::admin::admin_route_list()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
}
