//! The gateway's admin API over HTTP: every operation with a refused and an accepted case,
//! capability approval on upgrade, write-only secrets, and the CLI's `--server` mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Platform, bundle, guest, hello_manifest, palisade_binary};

const HELLO: &str = "com.example.hello";
const PROBE: &str = "com.example.secret-probe";
const TENANT: &str = "acme";
const SECRET: &str = "s3cr3t-value-never-echoed";

struct Reply {
    status: StatusCode,
    json: Value,
}

impl Reply {
    /// Asserts an admin error with `status` whose message contains `needle`.
    fn refused(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "{}", self.json);
        let message = self.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
        assert!(self.json["request_id"].is_string(), "{}", self.json);
    }
}

async fn admin(
    platform: &Platform,
    method: Method,
    path: &str,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Reply {
    let request = platform
        .client
        .request(
            method,
            format!("http://{}/admin/v1{path}", platform.gateway),
        )
        .bearer_auth(ADMIN_TOKEN);
    let response = build(request).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, json }
}

async fn publish(platform: &Platform, bytes: &[u8]) -> Reply {
    let signature = STANDARD.encode(platform.publisher.sign(bytes).unwrap());
    let body = bytes.to_vec();
    admin(platform, Method::POST, "/extensions", |r| {
        r.header("x-palisade-signature", signature).body(body)
    })
    .await
}

async fn install(platform: &Platform, ext: &str, body: Value) -> Reply {
    admin(
        platform,
        Method::PUT,
        &format!("/tenants/{TENANT}/installs/{ext}"),
        |r| r.json(&body),
    )
    .await
}

fn hello_bundle(version: &str, capabilities: Value) -> Vec<u8> {
    let mut manifest = hello_manifest();
    manifest["version"] = version.into();
    manifest["capabilities"] = capabilities;
    bundle(&manifest, &guest("hello"))
}

#[tokio::test]
async fn publish_refuses_bad_input_and_accepts_a_signed_bundle() {
    let platform = Platform::start().await;
    let bytes = hello_bundle("0.1.0", json!({"log": true}));

    let no_signature = admin(&platform, Method::POST, "/extensions", |r| {
        r.body(bytes.clone())
    })
    .await;
    no_signature.refused(StatusCode::BAD_REQUEST, "x-palisade-signature");

    let other_key = palisade_bundle::SigningKey::generate().unwrap();
    let forged = STANDARD.encode(other_key.sign(&bytes).unwrap());
    let body = bytes.clone();
    let untrusted = admin(&platform, Method::POST, "/extensions", |r| {
        r.header("x-palisade-signature", forged).body(body)
    })
    .await;
    untrusted.refused(StatusCode::BAD_REQUEST, "signature");

    let anonymous = platform
        .client
        .post(format!("http://{}/admin/v1/extensions", platform.gateway))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let published = publish(&platform, &bytes).await;
    assert_eq!(published.status, StatusCode::OK, "{}", published.json);
    assert_eq!(published.json["extension_id"], HELLO);
    assert_eq!(published.json["version"], "0.1.0");
    assert!(
        published.json["content_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // The same bytes again: the same version.
    let again = publish(&platform, &bytes).await;
    assert_eq!(again.json["version_id"], published.json["version_id"]);
    // Other bytes under the same version: a conflict.
    let other = hello_bundle("0.1.0", json!({"log": true, "metrics": true}));
    publish(&platform, &other)
        .await
        .refused(StatusCode::CONFLICT, "already published");
}

#[tokio::test]
async fn extensions_and_versions_are_listed() {
    let platform = Platform::start().await;
    let empty = admin(&platform, Method::GET, "/extensions", |r| r).await;
    assert_eq!(empty.json, json!([]));
    admin(
        &platform,
        Method::GET,
        &format!("/extensions/{HELLO}"),
        |r| r,
    )
    .await
    .refused(StatusCode::NOT_FOUND, HELLO);
    admin(
        &platform,
        Method::GET,
        &format!("/extensions/{HELLO}/versions"),
        |r| r,
    )
    .await
    .refused(StatusCode::NOT_FOUND, HELLO);

    publish(&platform, &hello_bundle("0.1.0", json!({"log": true}))).await;
    publish(&platform, &hello_bundle("0.2.0", json!({"log": true}))).await;
    let list = admin(&platform, Method::GET, "/extensions", |r| r).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json[0]["id"], HELLO);
    assert_eq!(list.json[0]["latest_version"], "0.2.0");
    let one = admin(
        &platform,
        Method::GET,
        &format!("/extensions/{HELLO}"),
        |r| r,
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["versions"][0]["version"], "0.2.0");
    assert_eq!(one.json["versions"][1]["requested"], json!(["log"]));
    let versions = admin(
        &platform,
        Method::GET,
        &format!("/extensions/{HELLO}/versions"),
        |r| r,
    )
    .await;
    assert_eq!(versions.json.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn install_needs_approval_and_an_upgrade_waits_for_it() {
    let platform = Platform::start().await;
    publish(&platform, &hello_bundle("0.1.0", json!({"log": true}))).await;

    install(&platform, HELLO, json!({"approve": []}))
        .await
        .refused(StatusCode::CONFLICT, "log");
    install(&platform, HELLO, json!({"approve": "log"}))
        .await
        .refused(StatusCode::BAD_REQUEST, "approve");
    install(
        &platform,
        HELLO,
        json!({"approve": ["log"], "version": "one"}),
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "version");
    install(&platform, "com.example.absent", json!({"approve": ["log"]}))
        .await
        .refused(StatusCode::NOT_FOUND, "com.example.absent");
    admin(
        &platform,
        Method::PUT,
        &format!("/tenants/not%20a%20tenant/installs/{HELLO}"),
        |r| r.json(&json!({"approve": ["log"]})),
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "tenant id");

    let installed = install(&platform, HELLO, json!({"approve": ["log"]})).await;
    assert_eq!(installed.status, StatusCode::OK, "{}", installed.json);
    assert_eq!(installed.json["version"], "0.1.0");
    assert_eq!(installed.json["enabled"], true);
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 200);

    // 0.2.0 also asks for metrics: with the old approval the install stays on 0.1.0.
    publish(
        &platform,
        &hello_bundle("0.2.0", json!({"log": true, "metrics": true})),
    )
    .await;
    install(&platform, HELLO, json!({"approve": ["log"]}))
        .await
        .refused(StatusCode::CONFLICT, "metrics");
    let resolved = platform.registry.resolve(TENANT, HELLO).await.unwrap();
    assert_eq!(resolved.unwrap().version, "0.1.0");
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 200);

    let upgraded = install(&platform, HELLO, json!({"approve": ["log", "metrics"]})).await;
    assert_eq!(upgraded.status, StatusCode::OK, "{}", upgraded.json);
    assert_eq!(upgraded.json["version"], "0.2.0");
    assert_eq!(upgraded.json["install_id"], installed.json["install_id"]);
}

#[tokio::test]
async fn enable_disable_and_uninstall() {
    let platform = Platform::start().await;
    let install_path = format!("/tenants/{TENANT}/installs/{HELLO}");
    for action in ["enable", "disable"] {
        admin(
            &platform,
            Method::POST,
            &format!("{install_path}/{action}"),
            |r| r,
        )
        .await
        .refused(StatusCode::NOT_FOUND, "no install");
    }
    admin(&platform, Method::DELETE, &install_path, |r| r)
        .await
        .refused(StatusCode::NOT_FOUND, "no install");

    platform.install_hello(TENANT).await;
    let disabled = admin(
        &platform,
        Method::POST,
        &format!("{install_path}/disable"),
        |r| r,
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.json["enabled"], false);
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 404);
    let enabled = admin(
        &platform,
        Method::POST,
        &format!("{install_path}/enable"),
        |r| r,
    )
    .await;
    assert_eq!(enabled.json["enabled"], true);
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 200);

    let removed = admin(&platform, Method::DELETE, &install_path, |r| r).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 404);
}

#[tokio::test]
async fn secrets_are_write_only() {
    let platform = Platform::start().await;
    let secrets = format!("/tenants/{TENANT}/installs/{PROBE}/secrets");
    let set = |name: &str, value: Value| {
        let path = format!("{secrets}/{name}");
        let platform = &platform;
        async move {
            admin(platform, Method::PUT, &path, |r| {
                r.json(&json!({"value": value}))
            })
            .await
        }
    };
    set("API_TOKEN", SECRET.into())
        .await
        .refused(StatusCode::NOT_FOUND, "no install");

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guests/secret-probe/manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    publish(&platform, &bundle(&manifest, &guest("secret-probe"))).await;
    let installed = install(&platform, PROBE, json!({"approve": ["log", "secrets"]})).await;
    assert_eq!(installed.status, StatusCode::OK, "{}", installed.json);

    set("NOT_LISTED", SECRET.into())
        .await
        .refused(StatusCode::BAD_REQUEST, "NOT_LISTED");
    set("API_TOKEN", "".into())
        .await
        .refused(StatusCode::BAD_REQUEST, "empty");
    set("API_TOKEN", 42.into())
        .await
        .refused(StatusCode::BAD_REQUEST, "value");

    let stored = set("API_TOKEN", SECRET.into()).await;
    assert_eq!(stored.status, StatusCode::NO_CONTENT);
    let install_id = installed.json["install_id"].as_str().unwrap();
    let value = platform
        .registry
        .read_secret(&platform.opener, install_id, "API_TOKEN")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value.expose(), SECRET);

    let listed = admin(&platform, Method::GET, &secrets, |r| r).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json[0]["name"], "API_TOKEN");
    assert!(!listed.json.to_string().contains(SECRET));

    let path = format!("{secrets}/API_TOKEN");
    let deleted = admin(&platform, Method::DELETE, &path, |r| r).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    admin(&platform, Method::DELETE, &path, |r| r)
        .await
        .refused(StatusCode::NOT_FOUND, "API_TOKEN");
}

#[tokio::test]
async fn the_execution_log_is_readable() {
    let platform = Platform::start().await;
    platform.install_hello(TENANT).await;
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 200);

    admin(
        &platform,
        Method::GET,
        &format!("/tenants/{TENANT}/executions?limit=0"),
        |r| r,
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "limit");
    admin(
        &platform,
        Method::GET,
        &format!("/tenants/{TENANT}/executions?limit=many"),
        |r| r,
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "limit");
    admin(
        &platform,
        Method::GET,
        &format!("/tenants/{TENANT}/executions?status=9xx"),
        |r| r,
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "`9xx`");
    admin(
        &platform,
        Method::GET,
        &format!("/tenants/{TENANT}/executions?since_ms=yesterday"),
        |r| r,
    )
    .await
    .refused(StatusCode::BAD_REQUEST, "since_ms");

    // The row is written in the background.
    let path = format!("/tenants/{TENANT}/executions?extension={HELLO}&limit=10");
    let mut rows = Value::Null;
    for _ in 0..50 {
        rows = admin(&platform, Method::GET, &path, |r| r).await.json;
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows[0]["extension_id"], HELLO, "{rows}");
    assert_eq!(rows[0]["status"], 200);
    assert_eq!(rows[0]["path"], "/hello/:name");
}

/// Runs `palisade` on an empty data directory (remote mode must not need one).
pub(crate) fn palisade(data_dir: &Path, args: &[&str], token_env: Option<&str>) -> Output {
    let mut command = Command::new(palisade_binary());
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("PALISADE_ADMIN_TOKEN")
        .env("RUST_LOG", "warn");
    if let Some(token) = token_env {
        command.env("PALISADE_ADMIN_TOKEN", token);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_installs_through_the_admin_api() {
    let platform = Platform::start().await;
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("unused-data-dir");
    let bytes = hello_bundle("0.1.0", json!({"log": true}));
    let bundle_path = work.path().join("bundle.tar.zst");
    std::fs::write(&bundle_path, &bytes).unwrap();
    let signature = STANDARD.encode(platform.publisher.sign(&bytes).unwrap());
    std::fs::write(work.path().join("bundle.tar.zst.sig"), signature).unwrap();
    let server = format!("http://{}", platform.gateway);
    let bundle_arg = bundle_path.to_str().unwrap();

    let output = tokio::task::block_in_place(|| {
        palisade(
            &data_dir,
            &[
                "publish",
                bundle_arg,
                "--server",
                &server,
                "--admin-token",
                "wrong",
            ],
            None,
        )
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let output = tokio::task::block_in_place(|| {
        palisade(
            &data_dir,
            &[
                "publish",
                bundle_arg,
                "--server",
                &server,
                "--admin-token",
                ADMIN_TOKEN,
            ],
            None,
        )
    });
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("published com.example.hello@0.1.0"),
        "{stdout}"
    );

    let install_args = ["install", "--tenant", TENANT, HELLO, "--server", &server];
    let output =
        tokio::task::block_in_place(|| palisade(&data_dir, &install_args, Some(ADMIN_TOKEN)));
    assert!(!output.status.success(), "nothing approved");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("409") && stderr.contains("log"), "{stderr}");

    let mut approved = install_args.to_vec();
    approved.extend(["--approve", "log"]);
    let output = tokio::task::block_in_place(|| palisade(&data_dir, &approved, Some(ADMIN_TOKEN)));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 200);
    assert!(
        !data_dir.join("registry.db").exists(),
        "--server never opens the data directory"
    );
}

/// `palisade installs`, `versions`, `disable`, `enable` and `uninstall`, through the admin
/// API (`--server`) and on the registry directly (`--data-dir`, `--database-url`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_changes_installs_both_ways() {
    let platform = Platform::start().await;
    let published = platform.install_hello(TENANT).await;
    let server = format!("http://{}", platform.gateway);
    let remote = ["--server", server.as_str()];
    let database_url = palisade_registry::testing::database_url(platform.dir.path());
    let local = ["--database-url", database_url.as_str()];
    let run = |args: Vec<&str>| {
        let output =
            tokio::task::block_in_place(|| palisade(platform.dir.path(), &args, Some(ADMIN_TOKEN)));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };
    let hash = published.content_hash.to_string();

    for mode in [&remote[..], &local[..]] {
        let (ok, stdout, stderr) = run(with(&["installs", "--tenant", TENANT], mode));
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains(HELLO) && stdout.contains("enabled"),
            "{stdout}"
        );
        assert!(stdout.contains(&hash), "{stdout}");
        let (ok, stdout, stderr) = run(with(&["versions", HELLO], mode));
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("0.1.0") && stdout.contains(&hash),
            "{stdout}"
        );
    }

    let (ok, _, stderr) = run(with(&["disable", "--tenant", TENANT, HELLO], &remote));
    assert!(ok, "{stderr}");
    assert_eq!(platform.call_status(TENANT, HELLO, "/hello/ada").await, 404);
    let (ok, _, stderr) = run(with(&["enable", "--tenant", TENANT, HELLO], &local));
    assert!(ok, "{stderr}");
    let (_, stdout, _) = run(with(&["installs", "--tenant", TENANT], &remote));
    assert!(
        stdout.contains("enabled") && !stdout.contains("disabled"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run(with(&["uninstall", "--tenant", TENANT, HELLO], &remote));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("uninstalled"), "{stdout}");
    let (_, stdout, _) = run(with(&["installs", "--tenant", TENANT], &local));
    assert!(stdout.contains("has no installs"), "{stdout}");
    for mode in [&remote[..], &local[..]] {
        let (ok, _, stderr) = run(with(&["uninstall", "--tenant", TENANT, HELLO], mode));
        assert!(!ok);
        assert!(
            stderr.contains("no install") || stderr.contains("404"),
            "{stderr}"
        );
    }
    let (ok, _, stderr) = run(with(&["versions", "com.example.absent"], &local));
    assert!(!ok && stderr.contains("not published"), "{stderr}");
}

/// `command` followed by the arguments of `mode`.
fn with<'a>(command: &[&'a str], mode: &[&'a str]) -> Vec<&'a str> {
    command.iter().chain(mode).copied().collect()
}

#[test]
fn shell_completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let output = palisade(Path::new("/nonexistent"), &["completions", shell], None);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("uninstall") && script.contains("installs"),
            "{shell}"
        );
    }
}
