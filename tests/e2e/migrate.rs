//! `palisade migrate`: a single-machine platform (SQLite and a local object directory)
//! copied onto PostgreSQL and an S3 bucket answers every install from there. Runs in the
//! PostgreSQL suite, against moto's S3 server.

use std::process::Command;

use palisade_bundle::CapabilityKey;
use palisade_registry::ObjectStoreConfig;
use palisade_registry::testing::{S3Server, postgres_schema_url, postgres_url_or_skip};
use serde_json::Value;

use crate::support::{Options, Platform, Seeder, hello_manifest, palisade_binary};

const HELLO: &str = "com.example.hello";
const OTHER: &str = "com.example.hello-copy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_copied_to_postgres_and_s3_answers_every_install() {
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    let Some(s3) = S3Server::start("palisade-migrate") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let single = work.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    let sqlite = format!("sqlite://{}", single.join("registry.db").display());
    let seeder = Seeder::open(&sqlite, single.join("objects")).await;
    let mut other = hello_manifest();
    other["id"] = Value::from(OTHER);
    let installs = [("acme", HELLO), ("acme", OTHER), ("globex", HELLO)];
    seeder
        .install("acme", &hello_manifest(), "hello", &[CapabilityKey::Log])
        .await;
    seeder
        .install("acme", &other, "hello", &[CapabilityKey::Log])
        .await;
    seeder
        .registry
        .install(
            "globex",
            HELLO,
            None,
            &[CapabilityKey::Log],
            Default::default(),
        )
        .await
        .unwrap();

    let schema = format!("palisade_migrate_{}", uuid::Uuid::new_v4().simple());
    let target = postgres_schema_url(&server, &schema);
    let migrate = |extra: &[&str]| {
        Command::new(palisade_binary())
            .arg("--data-dir")
            .arg(work.path().join("cli"))
            .args(["--object-store", "s3://palisade-migrate/moved"])
            .args(["migrate", "--from", &sqlite, "--to", &target])
            .args(extra)
            .envs(s3.aws_env())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let output = tokio::task::block_in_place(|| migrate(&[]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let installs_line = stdout
        .lines()
        .find(|line| line.starts_with("tenant_extension_install"))
        .unwrap_or_default();
    assert!(installs_line.contains(" 3 rows"), "{stdout}");

    // Again: the target is not empty, and nothing is written.
    let output = tokio::task::block_in_place(|| migrate(&[]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");

    // A platform on the copy answers every install.
    let platform = Platform::start_with(Options {
        database_url: Some(target),
        objects: Some(ObjectStoreConfig::S3(s3.config("moved"))),
        ..Options::default()
    })
    .await;
    for (tenant, extension) in installs {
        let response = platform.call(tenant, extension, "/hello/ada").await;
        assert_eq!(response.status(), 200, "{tenant} {extension}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["tenant"], tenant, "{body}");
    }
}
