//! The `secrets` capability end to end: values set through the registry (sealed with the
//! runner's keyring) are read by the guest under the names its grant lists, per install.

use palisade_bundle::CapabilityKey;
use palisade_registry::SecretValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{Platform, bundle, guest};

const EXT: &str = "com.example.secret-probe";
const TOKEN: &str = "ghp_e2e-plaintext-token-value";

fn manifest() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/secret-probe/manifest.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Publishes the probe and installs it for each tenant; returns the install ids.
async fn installed(platform: &Platform, tenants: &[&str]) -> Vec<String> {
    let approved = [CapabilityKey::Log, CapabilityKey::Secrets];
    platform
        .install_guest(&manifest(), "secret-probe", tenants, &approved)
        .await
}

async fn set(platform: &Platform, tenant: &str, name: &str, value: &str) {
    platform
        .registry
        .set_secret(
            &platform.sealer,
            tenant,
            EXT,
            name,
            &SecretValue::new(value),
        )
        .await
        .unwrap();
}

/// What the probe reported for `name` when called by `tenant`.
async fn probe(platform: &Platform, tenant: &str, name: &str) -> Value {
    let response = platform.call(tenant, EXT, &format!("/secret/{name}")).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(TOKEN), "the probe never echoes the value");
    serde_json::from_str(&text).unwrap()
}

fn sha256(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[tokio::test]
async fn a_granted_secret_reaches_the_guest() {
    let platform = Platform::start().await;
    installed(&platform, &["acme"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;

    let got = probe(&platform, "acme", "API_TOKEN").await;
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["length"], TOKEN.len());
    assert_eq!(got["sha256"], sha256(TOKEN));

    // Neither the stored row nor the execution log holds the plaintext.
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, ciphertext FROM extension_secret")
            .fetch_all(platform.registry.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].1.windows(8).any(|w| w == &TOKEN.as_bytes()[..8]));
    let log = platform
        .registry
        .recent_executions("acme", Some(EXT), 10)
        .await
        .unwrap();
    assert!(!format!("{log:?}").contains(TOKEN));
}

#[tokio::test]
async fn a_name_outside_the_grant_is_not_granted() {
    let platform = Platform::start().await;
    installed(&platform, &["acme"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;
    let got = probe(&platform, "acme", "OTHER_TOKEN").await;
    assert_eq!(got["error"], "not-granted", "{got}");
}

#[tokio::test]
async fn a_granted_name_without_a_value_is_not_found() {
    let platform = Platform::start().await;
    installed(&platform, &["acme"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;
    let got = probe(&platform, "acme", "UNSET_TOKEN").await;
    assert_eq!(got["error"], "not-found", "{got}");
}

#[tokio::test]
async fn another_tenants_install_cannot_read_the_value() {
    let platform = Platform::start().await;
    installed(&platform, &["acme", "globex"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;

    let got = probe(&platform, "globex", "API_TOKEN").await;
    assert_eq!(got["error"], "not-found", "{got}");

    set(&platform, "globex", "API_TOKEN", "globex-own-value").await;
    let globex = probe(&platform, "globex", "API_TOKEN").await;
    assert_eq!(globex["sha256"], sha256("globex-own-value"));
    let acme = probe(&platform, "acme", "API_TOKEN").await;
    assert_eq!(acme["sha256"], sha256(TOKEN));
}

#[tokio::test]
async fn a_row_copied_to_another_install_is_unavailable() {
    let platform = Platform::start().await;
    let ids = installed(&platform, &["acme", "globex"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;

    // Someone with database access copies acme's sealed row to globex's install.
    sqlx::query(
        "INSERT INTO extension_secret (install_id, name, nonce, ciphertext, key_id, updated_at) \
         SELECT $1, name, nonce, ciphertext, key_id, updated_at FROM extension_secret \
         WHERE install_id = $2",
    )
    .bind(&ids[1])
    .bind(&ids[0])
    .execute(platform.registry.pool())
    .await
    .unwrap();

    let got = probe(&platform, "globex", "API_TOKEN").await;
    assert_eq!(got["error"], "unavailable", "{got}");
    let acme = probe(&platform, "acme", "API_TOKEN").await;
    assert_eq!(acme["ok"], true, "the original row still opens: {acme}");
}

#[tokio::test]
async fn secrets_survive_an_upgrade_and_leave_with_the_install() {
    let platform = Platform::start().await;
    installed(&platform, &["acme"]).await;
    set(&platform, "acme", "API_TOKEN", TOKEN).await;

    let mut newer = manifest();
    newer["version"] = "0.2.0".into();
    platform
        .publish(&bundle(&newer, &guest("secret-probe")))
        .await;
    platform
        .registry
        .install(
            "acme",
            EXT,
            None,
            &[CapabilityKey::Log, CapabilityKey::Secrets],
            Default::default(),
        )
        .await
        .unwrap();
    let got = probe(&platform, "acme", "API_TOKEN").await;
    assert_eq!(got["sha256"], sha256(TOKEN), "{got}");

    platform.registry.uninstall("acme", EXT).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM extension_secret")
        .fetch_one(platform.registry.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
}
