//! Looking up what a call should run: the tenant's enabled install, its version, manifest
//! and effective grants.

use std::collections::BTreeMap;

use crate::db::Row as DbRow;
use palisade_bundle::hash::ContentHash;
use palisade_bundle::manifest::{Capabilities, CapabilityKey, Manifest};
use sqlx::Row;

use crate::Registry;
use crate::error::RegistryError;

/// An enabled install with everything needed to run it.
#[derive(Debug, Clone)]
pub struct ResolvedInstall {
    /// Install id.
    pub install_id: String,
    /// The tenant owning the install.
    pub tenant_id: String,
    /// The installed extension.
    pub extension_id: String,
    /// The installed version's row id.
    pub version_id: String,
    /// The installed version (semver text).
    pub version: String,
    /// Content hash of the installed bundle.
    pub content_hash: ContentHash,
    /// The installed version's manifest.
    pub manifest: Manifest,
    /// The manifest's capabilities restricted to what the tenant approved.
    pub grants: Capabilities,
    /// The install's non-secret configuration values.
    pub config: BTreeMap<String, String>,
}

const SELECT_RESOLVED: &str = "SELECT i.id AS install_id, i.tenant_id, i.extension_id, \
     i.version_id, i.approved_capabilities_json, i.config_json, \
     v.version, v.content_hash, v.manifest_json \
     FROM tenant_extension_install i JOIN extension_version v ON v.id = i.version_id";

impl Registry {
    /// The tenant's enabled install of `extension_id`, if any.
    pub async fn resolve(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<Option<ResolvedInstall>, RegistryError> {
        let _timer = self.queries.time("resolve_install");
        let sql = format!(
            "{SELECT_RESOLVED} WHERE i.tenant_id = $1 AND i.extension_id = $2 AND i.enabled = $3"
        );
        let row = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(extension_id)
            .bind(true)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(resolved_from_row).transpose()
    }

    /// The enabled install with id `install_id`, if any.
    pub async fn load_install(
        &self,
        install_id: &str,
    ) -> Result<Option<ResolvedInstall>, RegistryError> {
        let _timer = self.queries.time("load_install");
        let sql = format!("{SELECT_RESOLVED} WHERE i.id = $1 AND i.enabled = $2");
        let row = sqlx::query(&sql)
            .bind(install_id)
            .bind(true)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(resolved_from_row).transpose()
    }
}

fn resolved_from_row(row: &DbRow) -> Result<ResolvedInstall, RegistryError> {
    let install_id: String = row.try_get("install_id")?;
    let version_id: String = row.try_get("version_id")?;

    let hash_text: String = row.try_get("content_hash")?;
    let content_hash: ContentHash = hash_text
        .parse()
        .map_err(|e| RegistryError::corrupt("extension_version", "content_hash", &version_id, e))?;

    let manifest_json: String = row.try_get("manifest_json")?;
    let manifest = crate::error::stored_manifest(&version_id, &manifest_json)?;

    let approved = approved_keys(
        &install_id,
        &row.try_get::<String, _>("approved_capabilities_json")?,
    )?;
    let grants = manifest.capabilities.restrict_to(&approved);

    let config_json: String = row.try_get("config_json")?;
    let config: BTreeMap<String, String> = serde_json::from_str(&config_json).map_err(|e| {
        RegistryError::corrupt("tenant_extension_install", "config_json", &install_id, e)
    })?;

    Ok(ResolvedInstall {
        tenant_id: row.try_get("tenant_id")?,
        extension_id: row.try_get("extension_id")?,
        version: row.try_get("version")?,
        install_id,
        version_id,
        content_hash,
        manifest,
        grants,
        config,
    })
}

/// Parses the stored approval list. Keys this build does not know are skipped: an unknown
/// approval grants nothing.
fn approved_keys(install_id: &str, json: &str) -> Result<Vec<CapabilityKey>, RegistryError> {
    let names: Vec<String> = serde_json::from_str(json).map_err(|e| {
        RegistryError::corrupt(
            "tenant_extension_install",
            "approved_capabilities_json",
            install_id,
            e,
        )
    })?;
    Ok(names
        .iter()
        .filter_map(|name| match name.parse::<CapabilityKey>() {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(install_id, %err, "ignoring unknown approved capability");
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::Fixture;

    const ID: &str = "com.example.notes";

    #[tokio::test]
    async fn resolve_returns_only_the_tenants_enabled_install() {
        let fx = Fixture::new().await;
        let caps = json!({"log": true, "storage": {"namespaces": ["notes"]}});
        let published = fx.publish_simple(ID, "1.0.0", caps).await;
        let config: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let approved = [
            CapabilityKey::Log,
            CapabilityKey::Storage,
            CapabilityKey::Http,
        ];
        let install = fx
            .registry
            .install("acme", ID, None, &approved, config.clone())
            .await
            .unwrap();

        let resolved = fx.registry.resolve("acme", ID).await.unwrap().unwrap();
        assert_eq!(resolved.install_id, install.install_id);
        assert_eq!(resolved.tenant_id, "acme");
        assert_eq!(resolved.extension_id, ID);
        assert_eq!(resolved.version_id, published.version_id);
        assert_eq!(resolved.version, "1.0.0");
        assert_eq!(resolved.content_hash, published.content_hash);
        assert_eq!(resolved.manifest.id, ID);
        // Approving more than requested grants nothing extra.
        assert_eq!(resolved.grants, resolved.manifest.capabilities);
        assert!(resolved.grants.http.is_none());
        assert_eq!(resolved.config, config);

        assert!(fx.registry.resolve("globex", ID).await.unwrap().is_none());
        assert!(
            fx.registry
                .resolve("acme", "com.example.other")
                .await
                .unwrap()
                .is_none()
        );

        let loaded = fx
            .registry
            .load_install(&install.install_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.tenant_id, "acme");
        assert!(
            fx.registry
                .load_install("no-such-id")
                .await
                .unwrap()
                .is_none()
        );

        fx.registry.set_enabled("acme", ID, false).await.unwrap();
        assert!(fx.registry.resolve("acme", ID).await.unwrap().is_none());
        assert!(
            fx.registry
                .load_install(&install.install_id)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn grants_follow_the_stored_approval() {
        let fx = Fixture::new().await;
        let caps = json!({"log": true, "metrics": true});
        fx.publish_simple(ID, "1.0.0", caps).await;
        let install = fx
            .registry
            .install(
                "acme",
                ID,
                None,
                &[CapabilityKey::Log, CapabilityKey::Metrics],
                BTreeMap::new(),
            )
            .await
            .unwrap();
        // An approval narrowed behind the registry's back (or by an older build) grants less.
        sqlx::query(
            "UPDATE tenant_extension_install SET approved_capabilities_json = '[\"log\"]' \
             WHERE id = $1",
        )
        .bind(&install.install_id)
        .execute(fx.registry.pool())
        .await
        .unwrap();
        let resolved = fx.registry.resolve("acme", ID).await.unwrap().unwrap();
        assert!(resolved.grants.log);
        assert!(!resolved.grants.metrics);
        assert!(resolved.manifest.capabilities.metrics);
    }

    #[test]
    fn unknown_approvals_grant_nothing() {
        let keys = approved_keys("i", r#"["log","sockets","http"]"#).unwrap();
        assert_eq!(keys, vec![CapabilityKey::Log, CapabilityKey::Http]);
    }

    #[test]
    fn malformed_approvals_name_the_row() {
        let err = approved_keys("install-7", "{").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("approved_capabilities_json"), "{text}");
        assert!(text.contains("install-7"), "{text}");
    }
}
