//! Tenant installs: install, upgrade, uninstall, enable and disable.

use std::collections::BTreeMap;

use palisade_bundle::imports::check_imports;
use palisade_bundle::manifest::{CapabilityKey, Manifest};
use sqlx::Row;

use crate::Registry;
use crate::db::now_millis;
use crate::error::{InstallError, InvalidTenantId, RegistryError};

/// Longest tenant id accepted.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A tenant's install of one extension version, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// Install id (a UUID); stable across upgrades.
    pub install_id: String,
    /// The tenant owning the install.
    pub tenant_id: String,
    /// The installed extension.
    pub extension_id: String,
    /// The installed version's row id.
    pub version_id: String,
    /// The installed version (semver text).
    pub version: String,
    /// The capability keys the tenant approved.
    pub approved: Vec<CapabilityKey>,
    /// The install's non-secret configuration values.
    pub config: BTreeMap<String, String>,
    /// Whether calls are served.
    pub enabled: bool,
    /// When the install was first created, unix epoch milliseconds.
    pub created_at_ms: i64,
    /// When the install last changed, unix epoch milliseconds.
    pub updated_at_ms: i64,
}

/// Checks a tenant id: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`.
pub fn validate_tenant_id(tenant_id: &str) -> Result<(), InvalidTenantId> {
    let mut bytes = tenant_id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && tenant_id.len() <= MAX_TENANT_ID_LEN {
        Ok(())
    } else {
        Err(InvalidTenantId {
            tenant_id: tenant_id.to_owned(),
        })
    }
}

/// A published version picked for an install.
struct Candidate {
    version_id: String,
    version: String,
    manifest: Manifest,
    imports: Vec<String>,
}

impl Registry {
    /// Installs `extension_id` for `tenant_id`, or moves an existing install of it to
    /// another version (keeping the install id, its enabled flag and its data).
    ///
    /// `version: None` picks the newest release (pre-releases only when there is nothing
    /// else). The tenant must approve every capability the manifest requests; otherwise
    /// nothing changes and [`InstallError::NotApproved`] names the missing ones.
    pub async fn install(
        &self,
        tenant_id: &str,
        extension_id: &str,
        version: Option<&semver::Version>,
        approved: &[CapabilityKey],
        config: BTreeMap<String, String>,
    ) -> Result<Install, InstallError> {
        validate_tenant_id(tenant_id)?;
        let candidate = self.pick_version(extension_id, version).await?;

        let requested = candidate.manifest.capabilities.keys();
        let missing: Vec<String> = requested
            .iter()
            .filter(|key| !approved.contains(key))
            .map(|key| key.as_str().to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(InstallError::NotApproved {
                extension_id: extension_id.to_owned(),
                version: candidate.version,
                missing,
            });
        }

        // The imports were checked at publish; check them again against what this tenant
        // grants, under this build's rules.
        let grants = candidate.manifest.capabilities.restrict_to(approved);
        check_imports(&candidate.imports, &grants).map_err(|source| InstallError::Imports {
            extension_id: extension_id.to_owned(),
            version: candidate.version.clone(),
            source,
        })?;

        let approved: Vec<CapabilityKey> = CapabilityKey::ALL
            .into_iter()
            .filter(|key| approved.contains(key))
            .collect();
        let approved_json = to_json(&approved, "approved capabilities")?;
        let config_json = to_json(&config, "install config")?;
        let now = now_millis();
        let new_id = uuid::Uuid::new_v4().to_string();

        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO tenant_extension_install (id, tenant_id, extension_id, version_id, \
             approved_capabilities_json, config_json, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (tenant_id, extension_id) DO UPDATE SET \
             version_id = excluded.version_id, \
             approved_capabilities_json = excluded.approved_capabilities_json, \
             config_json = excluded.config_json, \
             updated_at = excluded.updated_at \
             RETURNING id, CAST(enabled AS INTEGER) AS enabled, created_at, updated_at",
        )
        .bind(&new_id)
        .bind(tenant_id)
        .bind(extension_id)
        .bind(&candidate.version_id)
        .bind(&approved_json)
        .bind(&config_json)
        .bind(true)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let install_id: String = row.try_get("id")?;

        sqlx::query("DELETE FROM extension_event_subscription WHERE install_id = $1")
            .bind(&install_id)
            .execute(&mut *tx)
            .await?;
        for event in &candidate.manifest.events {
            sqlx::query(
                "INSERT INTO extension_event_subscription (id, install_id, topic, path) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (install_id, topic, path) DO NOTHING",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&install_id)
            .bind(&event.topic)
            .bind(&event.path)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        tracing::info!(
            tenant_id,
            extension_id,
            install_id = %install_id,
            version = %candidate.version,
            upgraded = install_id != new_id,
            "extension installed"
        );
        Ok(Install {
            install_id,
            tenant_id: tenant_id.to_owned(),
            extension_id: extension_id.to_owned(),
            version_id: candidate.version_id,
            version: candidate.version,
            approved,
            config,
            // Read as an integer: SQLite stores flags as 0 or 1.
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
        })
    }

    /// Removes the tenant's install of `extension_id` together with its storage, secrets,
    /// quota counters and event subscriptions. Returns whether there was one.
    pub async fn uninstall(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<bool, InstallError> {
        validate_tenant_id(tenant_id)?;
        let done = sqlx::query(
            "DELETE FROM tenant_extension_install WHERE tenant_id = $1 AND extension_id = $2",
        )
        .bind(tenant_id)
        .bind(extension_id)
        .execute(&self.pool)
        .await?;
        let removed = done.rows_affected() > 0;
        if removed {
            tracing::info!(tenant_id, extension_id, "extension uninstalled");
        }
        Ok(removed)
    }

    /// Enables or disables the tenant's install of `extension_id`. Returns whether there
    /// was one.
    pub async fn set_enabled(
        &self,
        tenant_id: &str,
        extension_id: &str,
        enabled: bool,
    ) -> Result<bool, InstallError> {
        validate_tenant_id(tenant_id)?;
        let done = sqlx::query(
            "UPDATE tenant_extension_install SET enabled = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND extension_id = $4",
        )
        .bind(enabled)
        .bind(now_millis())
        .bind(tenant_id)
        .bind(extension_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The version to install: the one asked for, or the newest.
    async fn pick_version(
        &self,
        extension_id: &str,
        version: Option<&semver::Version>,
    ) -> Result<Candidate, InstallError> {
        let row = match version {
            Some(version) => sqlx::query(
                "SELECT id, version, manifest_json, component_imports_json FROM extension_version \
                 WHERE extension_id = $1 AND version = $2",
            )
            .bind(extension_id)
            .bind(version.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| InstallError::NotFound {
                what: format!("extension `{extension_id}` version {version}"),
            })?,
            None => {
                let id = self.newest_version_id(extension_id).await?.ok_or_else(|| {
                    InstallError::NotFound {
                        what: format!("extension `{extension_id}`"),
                    }
                })?;
                sqlx::query(
                    "SELECT id, version, manifest_json, component_imports_json \
                     FROM extension_version WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&self.pool)
                .await?
            }
        };
        let version_id: String = row.try_get("id")?;
        let manifest_json: String = row.try_get("manifest_json")?;
        let manifest = Manifest::from_json(manifest_json.as_bytes()).map_err(|e| {
            RegistryError::corrupt("extension_version", "manifest_json", &version_id, e)
        })?;
        let imports_json: String = row.try_get("component_imports_json")?;
        let imports: Vec<String> = serde_json::from_str(&imports_json).map_err(|e| {
            RegistryError::corrupt(
                "extension_version",
                "component_imports_json",
                &version_id,
                e,
            )
        })?;
        Ok(Candidate {
            version: row.try_get("version")?,
            version_id,
            manifest,
            imports,
        })
    }

    /// Row id of the newest version of `extension_id`: the highest release, or the highest
    /// pre-release when there is no release.
    async fn newest_version_id(&self, extension_id: &str) -> Result<Option<String>, RegistryError> {
        let versions = self.list_versions(extension_id).await?;
        Ok(versions.into_iter().next().map(|v| v.version_id))
    }
}

fn to_json<T: serde::Serialize>(value: &T, what: &'static str) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(|source| RegistryError::Encode { what, source })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::{EMPTY_COMPONENT, Fixture, bundle, manifest_with};

    const ID: &str = "com.example.notes";
    const LOG_STORAGE: [CapabilityKey; 2] = [CapabilityKey::Log, CapabilityKey::Storage];

    fn storage() -> serde_json::Value {
        json!({"storage": {"namespaces": ["notes"]}})
    }

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tenant_ids() {
        for ok in ["a", "A1", "acme-corp", "t_1.prod", &"x".repeat(64)] {
            assert!(validate_tenant_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "é", &"x".repeat(65)] {
            let err = validate_tenant_id(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[tokio::test]
    async fn install_requires_every_requested_capability() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", storage()).await;
        let err = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        match &err {
            InstallError::NotApproved {
                missing, version, ..
            } => {
                assert_eq!(missing, &["storage"]);
                assert_eq!(version, "1.0.0");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("not approved: storage"), "{err}");
        assert_eq!(fx.count("tenant_extension_install").await, 0);
    }

    #[tokio::test]
    async fn install_stores_approval_config_and_subscriptions() {
        let fx = Fixture::new().await;
        let m = manifest_with(ID, "1.0.0", storage(), |m| {
            m["events"] = json!([{"topic": "order.created", "path": "/events/order"}]);
        });
        let published = fx.publish(&bundle(&m, EMPTY_COMPONENT)).await;
        let install = fx
            .registry
            .install(
                "acme",
                ID,
                None,
                &[
                    CapabilityKey::Storage,
                    CapabilityKey::Log,
                    CapabilityKey::Log,
                ],
                config(&[("greeting", "hi")]),
            )
            .await
            .unwrap();
        assert_eq!(install.tenant_id, "acme");
        assert_eq!(install.version_id, published.version_id);
        assert_eq!(install.version, "1.0.0");
        assert_eq!(install.approved, LOG_STORAGE);
        assert_eq!(install.config, config(&[("greeting", "hi")]));
        assert!(install.enabled);
        assert_eq!(install.created_at_ms, install.updated_at_ms);

        let topics: Vec<(String, String)> = sqlx::query_as(
            "SELECT topic, path FROM extension_event_subscription WHERE install_id = $1",
        )
        .bind(&install.install_id)
        .fetch_all(fx.registry.pool())
        .await
        .unwrap();
        assert_eq!(topics, [("order.created".into(), "/events/order".into())]);
    }

    #[tokio::test]
    async fn unknown_extension_or_version_is_not_found_by_name() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        let err = fx
            .registry
            .install("acme", "com.example.nope", None, &[], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("com.example.nope"), "{err}");

        let v = semver::Version::new(9, 9, 9);
        let err = fx
            .registry
            .install("acme", ID, Some(&v), &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("9.9.9"), "{err}");
    }

    #[tokio::test]
    async fn invalid_tenant_ids_are_refused() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        let err = fx
            .registry
            .install("../etc", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::InvalidTenantId(_)), "{err:?}");
        assert!(err.to_string().contains("`../etc`"), "{err}");
        assert!(fx.registry.uninstall("a b", ID).await.is_err());
        assert!(fx.registry.set_enabled("", ID, true).await.is_err());
    }

    #[tokio::test]
    async fn upgrade_keeps_the_install_id() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        let v1 = semver::Version::new(1, 0, 0);
        let first = fx
            .registry
            .install(
                "acme",
                ID,
                Some(&v1),
                &[CapabilityKey::Log],
                config(&[("a", "1")]),
            )
            .await
            .unwrap();
        let v2 = fx.publish_simple(ID, "1.1.0", json!({})).await;

        let second = fx
            .registry
            .install(
                "acme",
                ID,
                None,
                &[CapabilityKey::Log],
                config(&[("a", "2")]),
            )
            .await
            .unwrap();
        assert_eq!(second.install_id, first.install_id);
        assert_eq!(second.version_id, v2.version_id);
        assert_eq!(second.version, "1.1.0");
        assert_eq!(second.created_at_ms, first.created_at_ms);
        assert_eq!(fx.count("tenant_extension_install").await, 1);

        let resolved = fx.registry.resolve("acme", ID).await.unwrap().unwrap();
        assert_eq!(resolved.install_id, first.install_id);
        assert_eq!(resolved.version, "1.1.0");
        assert_eq!(resolved.config, config(&[("a", "2")]));
    }

    #[tokio::test]
    async fn upgrade_asking_for_more_stays_on_the_old_version() {
        let fx = Fixture::new().await;
        let v1 = fx.publish_simple(ID, "1.0.0", json!({})).await;
        fx.registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();
        fx.publish_simple(ID, "2.0.0", storage()).await;

        let err = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::NotApproved { .. }), "{err:?}");
        let resolved = fx.registry.resolve("acme", ID).await.unwrap().unwrap();
        assert_eq!(resolved.version_id, v1.version_id);

        let upgraded = fx
            .registry
            .install("acme", ID, None, &LOG_STORAGE, BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(upgraded.version, "2.0.0");
    }

    #[tokio::test]
    async fn imports_are_checked_again_at_install() {
        let fx = Fixture::new().await;
        let published = fx.publish_simple(ID, "1.0.0", json!({})).await;
        // Pretend the stored component imports something no rule of this build links.
        sqlx::query(
            "UPDATE extension_version SET component_imports_json = \
             '[\"wasi:sockets/tcp@0.2.0\"]' WHERE id = $1",
        )
        .bind(&published.version_id)
        .execute(fx.registry.pool())
        .await
        .unwrap();
        let err = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::Imports { .. }), "{err:?}");
        assert!(err.to_string().contains("wasi:sockets/tcp@0.2.0"), "{err}");
        assert_eq!(fx.count("tenant_extension_install").await, 0);
    }

    #[tokio::test]
    async fn disable_enable_and_uninstall() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        let install = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();

        assert!(fx.registry.set_enabled("acme", ID, false).await.unwrap());
        assert!(fx.registry.resolve("acme", ID).await.unwrap().is_none());
        // Re-installing keeps the tenant's choice to keep it disabled.
        let again = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();
        assert!(!again.enabled);
        assert!(fx.registry.set_enabled("acme", ID, true).await.unwrap());
        assert!(fx.registry.resolve("acme", ID).await.unwrap().is_some());
        assert!(!fx.registry.set_enabled("other", ID, true).await.unwrap());

        // Data belonging to the install goes with it.
        sqlx::query(
            "INSERT INTO extension_storage (install_id, namespace, key, value, revision, \
             updated_at) VALUES ($1, 'n', 'k', $2, 1, 0)",
        )
        .bind(&install.install_id)
        .bind(vec![0u8])
        .execute(fx.registry.pool())
        .await
        .unwrap();
        assert!(fx.registry.uninstall("acme", ID).await.unwrap());
        assert!(!fx.registry.uninstall("acme", ID).await.unwrap());
        assert_eq!(fx.count("extension_storage").await, 0);
        assert!(fx.registry.resolve("acme", ID).await.unwrap().is_none());
    }
}
