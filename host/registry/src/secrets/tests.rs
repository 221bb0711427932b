use palisade_bundle::manifest::CapabilityKey;
use serde_json::json;

use super::*;
use crate::test_support::Fixture;

const EXT: &str = "com.example.secretive";

fn sealer() -> SecretOpener {
    SecretOpener::new(SecretKey::from_bytes([42; 32]).unwrap(), []).unwrap()
}

/// A fixture with `EXT` (listing `TOKEN` and `OTHER`) installed for `tenant`.
async fn installed(tenant: &str) -> Fixture {
    let fx = Fixture::new().await;
    fx.publish_simple(EXT, "1.0.0", json!({"secrets": ["TOKEN", "OTHER"]}))
        .await;
    install(&fx, tenant).await;
    fx
}

async fn install(fx: &Fixture, tenant: &str) -> String {
    fx.registry
        .install(tenant, EXT, None, &CapabilityKey::ALL, Default::default())
        .await
        .unwrap()
        .install_id
}

#[tokio::test]
async fn a_set_secret_reads_back_and_is_sealed_at_rest() {
    let fx = installed("acme").await;
    let sealer = sealer();
    let value = SecretValue::new("ghp_plaintext_token");
    fx.registry
        .set_secret(&sealer, "acme", EXT, "TOKEN", &value)
        .await
        .unwrap();

    let install_id = fx
        .registry
        .resolve("acme", EXT)
        .await
        .unwrap()
        .unwrap()
        .install_id;
    let read = fx
        .registry
        .read_secret(&sealer, &install_id, "TOKEN")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.expose(), "ghp_plaintext_token");
    assert!(
        fx.registry
            .read_secret(&sealer, &install_id, "OTHER")
            .await
            .unwrap()
            .is_none()
    );

    let (key_id, ciphertext): (String, Vec<u8>) =
        sqlx::query_as("SELECT key_id, ciphertext FROM extension_secret")
            .fetch_one(fx.registry.pool())
            .await
            .unwrap();
    assert_eq!(key_id, sealer.primary_key_id());
    assert!(!ciphertext.windows(5).any(|w| w == b"ghp_p"));
}

#[tokio::test]
async fn setting_again_replaces_the_value() {
    let fx = installed("acme").await;
    let sealer = sealer();
    for value in ["one", "two"] {
        fx.registry
            .set_secret(&sealer, "acme", EXT, "TOKEN", &SecretValue::new(value))
            .await
            .unwrap();
    }
    let install_id = fx
        .registry
        .resolve("acme", EXT)
        .await
        .unwrap()
        .unwrap()
        .install_id;
    let read = fx.registry.read_secret(&sealer, &install_id, "TOKEN").await;
    assert_eq!(read.unwrap().unwrap().expose(), "two");
    assert_eq!(fx.count("extension_secret").await, 1);
}

#[tokio::test]
async fn names_the_manifest_does_not_list_are_refused() {
    let fx = installed("acme").await;
    let err = fx
        .registry
        .set_secret(&sealer(), "acme", EXT, "NOPE", &SecretValue::new("v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SecretError::NotDeclared { .. }), "{text}");
    assert!(
        text.contains("`NOPE`") && text.contains("`TOKEN`, `OTHER`"),
        "{text}"
    );
    assert!(!text.contains("v\""), "{text}");

    let err = fx
        .registry
        .check_secret_name("acme", EXT, "NOPE")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotDeclared { .. }), "{err}");
    fx.registry
        .check_secret_name("acme", EXT, "TOKEN")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_install_is_refused_by_name() {
    let fx = installed("acme").await;
    let err = fx
        .registry
        .set_secret(&sealer(), "globex", EXT, "TOKEN", &SecretValue::new("v"))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::InstallNotFound { .. }), "{err}");
    assert!(err.to_string().contains("globex"), "{err}");
    let err = fx
        .registry
        .list_secrets("bad tenant!", EXT)
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::InvalidTenantId(_)), "{err}");
}

#[tokio::test]
async fn disabled_installs_still_take_secrets() {
    let fx = installed("acme").await;
    fx.registry.set_enabled("acme", EXT, false).await.unwrap();
    fx.registry
        .set_secret(&sealer(), "acme", EXT, "TOKEN", &SecretValue::new("v"))
        .await
        .unwrap();
    assert_eq!(
        fx.registry.list_secrets("acme", EXT).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn empty_and_oversized_values_are_refused() {
    let fx = installed("acme").await;
    let err = fx
        .registry
        .set_secret(&sealer(), "acme", EXT, "TOKEN", &SecretValue::new(""))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::EmptyValue { .. }), "{err}");
    let big = "x".repeat(MAX_SECRET_VALUE_BYTES + 1);
    let err = fx
        .registry
        .set_secret(&sealer(), "acme", EXT, "TOKEN", &SecretValue::new(big))
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
    assert!(!err.to_string().contains("xxxx"), "{err}");
}

#[tokio::test]
async fn list_shows_names_and_key_ids_only() {
    let fx = installed("acme").await;
    let sealer = sealer();
    for name in ["TOKEN", "OTHER"] {
        fx.registry
            .set_secret(&sealer, "acme", EXT, name, &SecretValue::new("value"))
            .await
            .unwrap();
    }
    let listed = fx.registry.list_secrets("acme", EXT).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["OTHER", "TOKEN"]);
    assert!(listed.iter().all(|s| s.key_id == sealer.primary_key_id()));
    assert!(!format!("{listed:?}").contains("value"));
}

#[tokio::test]
async fn delete_removes_a_value_and_names_what_is_missing() {
    let fx = installed("acme").await;
    let sealer = sealer();
    fx.registry
        .set_secret(&sealer, "acme", EXT, "TOKEN", &SecretValue::new("v"))
        .await
        .unwrap();
    fx.registry
        .delete_secret("acme", EXT, "TOKEN")
        .await
        .unwrap();
    assert!(
        fx.registry
            .list_secrets("acme", EXT)
            .await
            .unwrap()
            .is_empty()
    );

    let err = fx
        .registry
        .delete_secret("acme", EXT, "TOKEN")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotSet { .. }), "{err}");
    let err = fx
        .registry
        .delete_secret("acme", EXT, "NOPE")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotDeclared { .. }), "{err}");
}

#[tokio::test]
async fn secrets_belong_to_one_install() {
    let fx = installed("acme").await;
    let other_install = install(&fx, "globex").await;
    let sealer = sealer();
    fx.registry
        .set_secret(
            &sealer,
            "acme",
            EXT,
            "TOKEN",
            &SecretValue::new("acme-only"),
        )
        .await
        .unwrap();
    assert!(
        fx.registry
            .read_secret(&sealer, &other_install, "TOKEN")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fx.registry
            .list_secrets("globex", EXT)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_row_copied_to_another_install_does_not_open() {
    let fx = installed("acme").await;
    let other_install = install(&fx, "globex").await;
    let sealer = sealer();
    fx.registry
        .set_secret(
            &sealer,
            "acme",
            EXT,
            "TOKEN",
            &SecretValue::new("acme-only"),
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO extension_secret (install_id, name, nonce, ciphertext, key_id, updated_at) \
         SELECT $1, name, nonce, ciphertext, key_id, updated_at FROM extension_secret",
    )
    .bind(&other_install)
    .execute(fx.registry.pool())
    .await
    .unwrap();
    let err = fx
        .registry
        .read_secret(&sealer, &other_install, "TOKEN")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SecretError::Seal {
                error: SealError::Decrypt { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&other_install), "{err}");
    assert!(!err.to_string().contains("acme-only"), "{err}");
}

#[tokio::test]
async fn uninstall_removes_the_secrets() {
    let fx = installed("acme").await;
    fx.registry
        .set_secret(&sealer(), "acme", EXT, "TOKEN", &SecretValue::new("v"))
        .await
        .unwrap();
    fx.registry.uninstall("acme", EXT).await.unwrap();
    assert_eq!(fx.count("extension_secret").await, 0);
}

#[tokio::test]
async fn reseal_moves_every_value_to_the_primary_key() {
    let fx = installed("acme").await;
    let old = sealer();
    for (name, value) in [("TOKEN", "t"), ("OTHER", "o")] {
        fx.registry
            .set_secret(&old, "acme", EXT, name, &SecretValue::new(value))
            .await
            .unwrap();
    }
    let rotated = SecretOpener::new(
        SecretKey::from_bytes([43; 32]).unwrap(),
        [SecretKey::from_bytes([42; 32]).unwrap()],
    )
    .unwrap();
    let usage = fx.registry.secret_key_usage().await.unwrap();
    assert_eq!(usage.get(old.primary_key_id()), Some(&2));

    let report = fx.registry.reseal_secrets(&rotated).await.unwrap();
    assert_eq!(report.resealed, 2);
    assert!(report.failed.is_empty());
    assert_eq!(
        report.remaining,
        BTreeMap::from([(rotated.primary_key_id().to_owned(), 2)])
    );

    // The old key can leave the keyring now.
    let new_only = SecretOpener::new(SecretKey::from_bytes([43; 32]).unwrap(), []).unwrap();
    let install_id = fx
        .registry
        .resolve("acme", EXT)
        .await
        .unwrap()
        .unwrap()
        .install_id;
    let read = fx
        .registry
        .read_secret(&new_only, &install_id, "OTHER")
        .await;
    assert_eq!(read.unwrap().unwrap().expose(), "o");

    // Nothing left to do the second time.
    let again = fx.registry.reseal_secrets(&rotated).await.unwrap();
    assert_eq!(again.resealed, 0);
}

#[tokio::test]
async fn reseal_reports_values_it_cannot_open() {
    let fx = installed("acme").await;
    let lost = SecretOpener::new(SecretKey::from_bytes([1; 32]).unwrap(), []).unwrap();
    fx.registry
        .set_secret(&lost, "acme", EXT, "TOKEN", &SecretValue::new("v"))
        .await
        .unwrap();
    let report = fx.registry.reseal_secrets(&sealer()).await.unwrap();
    assert_eq!(report.resealed, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].1, "TOKEN");
    assert!(report.failed[0].2.contains(lost.primary_key_id()));
    assert_eq!(report.remaining.get(lost.primary_key_id()), Some(&1));
}

/// Values an earlier version sealed with the symmetric keyring are re-sealed to the public
/// key by the migration; afterwards the private keyring alone reads them and the symmetric
/// keyring is no longer needed.
#[tokio::test]
async fn migration_reseals_legacy_values_to_the_public_key() {
    let fx = installed("acme").await;
    let install_id = fx
        .registry
        .resolve("acme", EXT)
        .await
        .unwrap()
        .unwrap()
        .install_id;
    let legacy = LegacyKeyring::new([LegacySecretKey::from_bytes([9; 32])]).unwrap();
    for (name, value) in [("TOKEN", "t-old"), ("OTHER", "o-old")] {
        let sealed = legacy
            .seal(&install_id, name, &SecretValue::new(value))
            .unwrap();
        sqlx::query(
            "INSERT INTO extension_secret (install_id, name, nonce, ciphertext, key_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(&install_id)
        .bind(name)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(&sealed.key_id)
        .execute(fx.registry.pool())
        .await
        .unwrap();
    }
    let opener = sealer();
    let err = fx
        .registry
        .read_secret(&opener, &install_id, "TOKEN")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SecretError::Seal {
                error: SealError::UnknownKey { .. },
                ..
            }
        ),
        "{err}"
    );

    let migrating = opener.clone().with_legacy(legacy.clone());
    let read = fx
        .registry
        .read_secret(&migrating, &install_id, "TOKEN")
        .await;
    assert_eq!(read.unwrap().unwrap().expose(), "t-old");
    let report = fx.registry.reseal_secrets(&migrating).await.unwrap();
    assert_eq!(report.resealed, 2);
    assert!(report.failed.is_empty());
    assert_eq!(
        report.remaining,
        BTreeMap::from([(opener.primary_key_id().to_owned(), 2)])
    );

    // The private keyring alone reads them now; the legacy key opens nothing.
    for (name, value) in [("TOKEN", "t-old"), ("OTHER", "o-old")] {
        let read = fx.registry.read_secret(&opener, &install_id, name).await;
        assert_eq!(read.unwrap().unwrap().expose(), value);
    }
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT key_id, nonce, ciphertext FROM extension_secret")
            .fetch_all(fx.registry.pool())
            .await
            .unwrap();
    for (key_id, nonce, ciphertext) in rows {
        assert_eq!(key_id, opener.primary_key_id());
        assert_eq!(nonce.len(), ENCAPPED_KEY_BYTES);
        let sealed = SealedSecret {
            key_id,
            nonce,
            ciphertext,
        };
        assert!(legacy.open(&install_id, "TOKEN", &sealed).is_err());
    }
    let again = fx.registry.reseal_secrets(&migrating).await.unwrap();
    assert_eq!(again.resealed, 0);
}
