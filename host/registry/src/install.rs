//! Tenant installs: install, upgrade, uninstall, enable and disable.

use std::collections::BTreeMap;

use palisade_bundle::hash::ContentHash;
use palisade_bundle::imports::check_imports;
use palisade_bundle::manifest::{Capabilities, CapabilityKey, Manifest};
use palisade_bundle::signing::decode_signature;
use sqlx::Row;

use crate::Registry;
use crate::changes;
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
    /// The installed version's bundle.
    pub content_hash: ContentHash,
    /// The installed version's UI entry document (below `ui/`), if it has a UI.
    pub ui_entry: Option<String>,
    /// The capability keys the tenant approved.
    pub approved: Vec<CapabilityKey>,
    /// The grant the tenant approved in detail: the version's `capabilities` restricted to
    /// the approved keys (storage namespaces, secret names, HTTP origins).
    pub grant: Capabilities,
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
    content_hash: ContentHash,
    version: String,
    manifest: Manifest,
    imports: Vec<String>,
}

impl Candidate {
    /// Refuses a version whose manifest requests a capability the tenant did not approve.
    fn check_approved(
        &self,
        extension_id: &str,
        approved: &[CapabilityKey],
    ) -> Result<(), InstallError> {
        let missing: Vec<String> = self
            .manifest
            .capabilities
            .keys()
            .iter()
            .filter(|key| !approved.contains(key))
            .map(|key| key.as_str().to_owned())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(InstallError::NotApproved {
            extension_id: extension_id.to_owned(),
            version: self.version.clone(),
            missing,
        })
    }

    /// The grant the tenant's approval makes of this version's manifest. The imports were
    /// checked at publish; they are checked again against this grant, under this build's
    /// rules.
    fn grant(
        &self,
        extension_id: &str,
        approved: &[CapabilityKey],
    ) -> Result<Capabilities, InstallError> {
        let grants = self.manifest.capabilities.restrict_to(approved);
        check_imports(&self.imports, &grants).map_err(|source| InstallError::Imports {
            extension_id: extension_id.to_owned(),
            version: self.version.clone(),
            source,
        })?;
        Ok(grants)
    }
}

/// Replaces the event subscriptions of `install_id` with those of `manifest`. A
/// subscription the manifest keeps (same topic and path) keeps its row, and so its pending
/// deliveries; one it drops is removed with them.
async fn replace_subscriptions(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    install_id: &str,
    manifest: &Manifest,
) -> Result<(), RegistryError> {
    let existing: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, topic, path FROM extension_event_subscription WHERE install_id = $1",
    )
    .bind(install_id)
    .fetch_all(&mut **tx)
    .await?;
    for (id, topic, path) in existing {
        let kept = manifest
            .events
            .iter()
            .any(|event| event.topic == topic && event.path == path);
        if !kept {
            sqlx::query("DELETE FROM extension_event_subscription WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    for event in &manifest.events {
        sqlx::query(
            "INSERT INTO extension_event_subscription (id, install_id, topic, path) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (install_id, topic, path) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(install_id)
        .bind(&event.topic)
        .bind(&event.path)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Registry {
    /// Installs `extension_id` for `tenant_id`, or moves an existing install of it to
    /// another version (keeping the install id, its enabled flag and its data).
    ///
    /// `version: None` picks the newest release (pre-releases only when there is nothing
    /// else). The tenant must approve every capability the manifest requests; otherwise
    /// nothing changes and [`InstallError::NotApproved`] names the missing ones.
    ///
    /// Moving an install to another version that widens the grant the tenant approved in
    /// detail (a new storage namespace, secret name or HTTP origin, or a capability approved
    /// before but not granted by the installed version) is
    /// [`InstallError::GrantWidened`]; see [`Registry::install_with`] to approve it.
    pub async fn install(
        &self,
        tenant_id: &str,
        extension_id: &str,
        version: Option<&semver::Version>,
        approved: &[CapabilityKey],
        config: BTreeMap<String, String>,
    ) -> Result<Install, InstallError> {
        self.install_with(tenant_id, extension_id, version, approved, config, false)
            .await
    }

    /// [`Registry::install`], where `approve_widened_grant` approves a grant wider than the
    /// one approved for the installed version. It needs `version` named, so the approval
    /// holds for the (immutable) version the tenant reviewed, not whatever is newest.
    pub async fn install_with(
        &self,
        tenant_id: &str,
        extension_id: &str,
        version: Option<&semver::Version>,
        approved: &[CapabilityKey],
        config: BTreeMap<String, String>,
        approve_widened_grant: bool,
    ) -> Result<Install, InstallError> {
        validate_tenant_id(tenant_id)?;
        if approve_widened_grant && version.is_none() {
            return Err(InstallError::VersionRequired {
                extension_id: extension_id.to_owned(),
            });
        }
        let candidate = self.pick_version(extension_id, version).await?;
        candidate.check_approved(extension_id, approved)?;
        self.verify_stored_bundle(extension_id, &candidate).await?;
        let grants = candidate.grant(extension_id, approved)?;
        if !approve_widened_grant {
            self.check_widening(tenant_id, extension_id, &candidate, &grants, approved)
                .await?;
        }
        // In the table's order, whatever order they were given in.
        let approved: Vec<CapabilityKey> = CapabilityKey::ALL
            .into_iter()
            .filter(|key| approved.contains(key))
            .collect();
        self.write_install(tenant_id, extension_id, candidate, approved, grants, config)
            .await
    }

    /// Refuses an upgrade of the tenant's install to `candidate` that grants more than the
    /// tenant approved for the installed version ([`InstallError::GrantWidened`]).
    async fn check_widening(
        &self,
        tenant_id: &str,
        extension_id: &str,
        candidate: &Candidate,
        grants: &Capabilities,
        approved: &[CapabilityKey],
    ) -> Result<(), InstallError> {
        let Some(current) = self.get_install(tenant_id, extension_id).await? else {
            return Ok(());
        };
        if current.version_id == candidate.version_id {
            return Ok(());
        }
        let widened = widening(&current.grant, &current.approved, grants, approved);
        if widened.is_empty() {
            return Ok(());
        }
        Err(InstallError::GrantWidened {
            extension_id: extension_id.to_owned(),
            installed: current.version,
            version: candidate.version.clone(),
            widened,
        })
    }

    /// Writes the install (a new one, or the tenant's existing one moved to `candidate`)
    /// and its event subscriptions, in one transaction.
    async fn write_install(
        &self,
        tenant_id: &str,
        extension_id: &str,
        candidate: Candidate,
        approved: Vec<CapabilityKey>,
        grants: Capabilities,
        config: BTreeMap<String, String>,
    ) -> Result<Install, InstallError> {
        let approved_json = to_json(&approved, "approved capabilities")?;
        let grant_json = to_json(&grants, "approved grant")?;
        let config_json = to_json(&config, "install config")?;
        let now = now_millis();
        let new_id = uuid::Uuid::new_v4().to_string();

        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO tenant_extension_install (id, tenant_id, extension_id, version_id, \
             approved_capabilities_json, config_json, enabled, created_at, updated_at, \
             approved_grant_json) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
             ON CONFLICT (tenant_id, extension_id) DO UPDATE SET \
             version_id = excluded.version_id, \
             approved_capabilities_json = excluded.approved_capabilities_json, \
             approved_grant_json = excluded.approved_grant_json, \
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
        .bind(&grant_json)
        .fetch_one(&mut *tx)
        .await?;
        let install_id: String = row.try_get("id")?;
        replace_subscriptions(&mut tx, &install_id, &candidate.manifest).await?;
        crate::schedules::replace_schedules(&mut tx, &install_id, &candidate.manifest).await?;
        changes::install_changed(&mut tx, tenant_id, extension_id, &install_id).await?;
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
            content_hash: candidate.content_hash,
            ui_entry: candidate.manifest.ui.map(|ui| ui.entry),
            approved,
            grant: grants,
            config,
            // Read as an integer: SQLite stores flags as 0 or 1.
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
        })
    }

    /// Removes the tenant's install of `extension_id` together with its storage, secrets,
    /// quota counters, event subscriptions, schedules and their deliveries. Returns whether there
    /// was one.
    pub async fn uninstall(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<bool, InstallError> {
        validate_tenant_id(tenant_id)?;
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM tenant_extension_install WHERE tenant_id = $1 AND extension_id = $2 \
             RETURNING id",
        )
        .bind(tenant_id)
        .bind(extension_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(install_id) = &removed {
            changes::install_changed(&mut tx, tenant_id, extension_id, install_id).await?;
        }
        tx.commit().await?;
        let removed = removed.is_some();
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
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let changed: Option<String> = sqlx::query_scalar(
            "UPDATE tenant_extension_install SET enabled = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND extension_id = $4 RETURNING id",
        )
        .bind(enabled)
        .bind(now_millis())
        .bind(tenant_id)
        .bind(extension_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(install_id) = &changed {
            changes::install_changed(&mut tx, tenant_id, extension_id, install_id).await?;
        }
        tx.commit().await?;
        Ok(changed.is_some())
    }

    /// Reads the candidate's bundle and signature from the object store, checks the bytes
    /// against the content hash and verifies the signature against the keys trusted now.
    async fn verify_stored_bundle(
        &self,
        extension_id: &str,
        candidate: &Candidate,
    ) -> Result<(), InstallError> {
        let (bundle, signature) = match self.bundle_bytes(&candidate.content_hash).await {
            Ok(objects) => objects,
            Err(mismatch @ RegistryError::ObjectMismatch { .. }) => {
                return Err(InstallError::Integrity {
                    extension_id: extension_id.to_owned(),
                    version: candidate.version.clone(),
                    content_hash: candidate.content_hash.to_string(),
                    reason: mismatch.to_string(),
                });
            }
            Err(err) => return Err(err.into()),
        };
        let trust = self.trust_set().await?;
        let expected = candidate.content_hash;
        let checked = tokio::task::spawn_blocking(move || {
            let actual = ContentHash::of(&bundle);
            if actual != expected {
                return Err(Err(format!("the stored bundle hashes to {actual}")));
            }
            trust
                .verify(&bundle, &decode_signature(&signature))
                .map_err(Ok)
        })
        .await;
        let error = match checked {
            Ok(Ok(_signer)) => return Ok(()),
            Ok(Err(error)) => error,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err("the check was interrupted".to_owned()),
            },
        };
        let (extension_id, version) = (extension_id.to_owned(), candidate.version.clone());
        Err(match error {
            Ok(source) => InstallError::Signature {
                extension_id,
                version,
                source,
            },
            Err(reason) => InstallError::Integrity {
                extension_id,
                version,
                content_hash: expected.to_string(),
                reason,
            },
        })
    }

    /// The tenant's install of `extension_id` as approved: its version and grant.
    /// The tenant's install of `extension_id`, if there is one.
    pub async fn get_install(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<Option<Install>, RegistryError> {
        let row = sqlx::query(&format!(
            "{INSTALL_SELECT} WHERE i.tenant_id = $1 AND i.extension_id = $2"
        ))
        .bind(tenant_id)
        .bind(extension_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| install_from_row(&row)).transpose()
    }

    /// The tenant's installs, by extension id.
    pub async fn list_installs(&self, tenant_id: &str) -> Result<Vec<Install>, RegistryError> {
        let rows = sqlx::query(&format!(
            "{INSTALL_SELECT} WHERE i.tenant_id = $1 ORDER BY i.extension_id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(install_from_row).collect()
    }

    /// The version to install: the one asked for, or the newest.
    async fn pick_version(
        &self,
        extension_id: &str,
        version: Option<&semver::Version>,
    ) -> Result<Candidate, InstallError> {
        let row = match version {
            Some(version) => sqlx::query(
                "SELECT id, version, content_hash, manifest_json, component_imports_json \
                 FROM extension_version WHERE extension_id = $1 AND version = $2",
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
                    "SELECT id, version, content_hash, manifest_json, component_imports_json \
                     FROM extension_version WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&self.pool)
                .await?
            }
        };
        let version_id: String = row.try_get("id")?;
        let manifest_json: String = row.try_get("manifest_json")?;
        let manifest = crate::error::stored_manifest(&version_id, &manifest_json)?;
        let imports_json: String = row.try_get("component_imports_json")?;
        let imports: Vec<String> = serde_json::from_str(&imports_json).map_err(|e| {
            RegistryError::corrupt(
                "extension_version",
                "component_imports_json",
                &version_id,
                e,
            )
        })?;
        let content_hash = row
            .try_get::<String, _>("content_hash")?
            .parse()
            .map_err(|e| {
                RegistryError::corrupt("extension_version", "content_hash", &version_id, e)
            })?;
        Ok(Candidate {
            content_hash,
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

/// What `next` (the grant of the version asked for, approved with `approved_now`) grants
/// beyond `previous` (the grant approved for the installed version, with the keys
/// `approved_before`), one line per item: a capability newly granted though approved
/// before, a new storage namespace, a higher storage cap, a new secret name or a new HTTP
/// origin (compared as written: a new origin is listed even if an old wildcard covers
/// it). A capability that this request approves for the first time is the tenant's fresh
/// approval of it, as at a first install, and is not listed.
pub(crate) fn widening(
    previous: &Capabilities,
    approved_before: &[CapabilityKey],
    next: &Capabilities,
    approved_now: &[CapabilityKey],
) -> Vec<String> {
    let mut out = Vec::new();
    for key in CapabilityKey::ALL {
        if !next.requests(key) {
            continue;
        }
        if !previous.requests(key) {
            if approved_before.contains(&key) || !approved_now.contains(&key) {
                out.push(format!("capability `{key}`"));
            } else {
                continue;
            }
        }
        out.extend(next.widening(previous, key));
    }
    out
}

/// The columns [`install_from_row`] reads: an install joined with its version.
const INSTALL_SELECT: &str = "SELECT i.id, i.tenant_id, i.extension_id, i.version_id, \
     i.approved_capabilities_json, i.approved_grant_json, i.config_json, \
     CAST(i.enabled AS INTEGER) AS enabled, i.created_at, i.updated_at, v.version, \
     v.content_hash, v.manifest_json FROM tenant_extension_install i \
     JOIN extension_version v ON v.id = i.version_id";

/// An install from a row of [`INSTALL_SELECT`].
fn install_from_row(row: &sqlx::any::AnyRow) -> Result<Install, RegistryError> {
    let install_id: String = row.try_get("id")?;
    let version_id: String = row.try_get("version_id")?;
    let corrupt = |column, e: &dyn std::fmt::Display| {
        RegistryError::corrupt("tenant_extension_install", column, &install_id, e)
    };
    let manifest =
        crate::error::stored_manifest(&version_id, &row.try_get::<String, _>("manifest_json")?)?;
    let approved: Vec<CapabilityKey> =
        serde_json::from_str(&row.try_get::<String, _>("approved_capabilities_json")?)
            .map_err(|e| corrupt("approved_capabilities_json", &e))?;
    let grant = match row.try_get::<Option<String>, _>("approved_grant_json")? {
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| corrupt("approved_grant_json", &e))?
        }
        // Not recorded: the installed version's request, restricted to the approval.
        None => manifest.capabilities.restrict_to(&approved),
    };
    let config = serde_json::from_str(&row.try_get::<String, _>("config_json")?)
        .map_err(|e| corrupt("config_json", &e))?;
    let content_hash: ContentHash = row
        .try_get::<String, _>("content_hash")?
        .parse()
        .map_err(|e| RegistryError::corrupt("extension_version", "content_hash", &version_id, e))?;
    Ok(Install {
        tenant_id: row.try_get("tenant_id")?,
        extension_id: row.try_get("extension_id")?,
        version: row.try_get("version")?,
        content_hash,
        ui_entry: manifest.ui.map(|ui| ui.entry),
        approved,
        grant,
        config,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        version_id,
        install_id,
    })
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
    async fn upgrade_widening_the_grant_waits_for_the_tenants_approval() {
        use CapabilityKey::{Http, Log, Secrets, Storage};
        let fx = Fixture::new().await;
        let caps = |origins: &[&str], namespaces: &[&str], secrets: &[&str]| {
            json!({
                "http": {"allow": origins},
                "storage": {"namespaces": namespaces},
                "secrets": secrets,
            })
        };
        let keys = [Log, Storage, Secrets, Http];
        let v1 = fx
            .publish_simple(
                ID,
                "1.0.0",
                caps(&["https://api.example.com"], &["notes"], &["TOKEN"]),
            )
            .await;
        fx.registry
            .install("acme", ID, None, &keys, BTreeMap::new())
            .await
            .unwrap();
        // Same capability names, wider grant.
        let wider = caps(
            &["https://api.example.com", "https://collect.evil.example"],
            &["notes", "other"],
            &["TOKEN", "ADMIN_TOKEN"],
        );
        let v2 = fx.publish_simple(ID, "2.0.0", wider).await;

        let err = fx
            .registry
            .install("acme", ID, None, &keys, BTreeMap::new())
            .await
            .unwrap_err();
        match &err {
            InstallError::GrantWidened {
                installed,
                version,
                widened,
                ..
            } => {
                assert_eq!((installed.as_str(), version.as_str()), ("1.0.0", "2.0.0"));
                assert_eq!(
                    widened,
                    &[
                        "storage namespace `other`",
                        "secret `ADMIN_TOKEN`",
                        "http origin `https://collect.evil.example`",
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("collect.evil.example"), "{err}");
        let resolved = fx.registry.resolve("acme", ID).await.unwrap().unwrap();
        assert_eq!(resolved.version_id, v1.version_id);

        // The approval must name the version the tenant reviewed.
        let err = fx
            .registry
            .install_with("acme", ID, None, &keys, BTreeMap::new(), true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, InstallError::VersionRequired { .. }),
            "{err:?}"
        );

        let v2_version = semver::Version::new(2, 0, 0);
        let upgraded = fx
            .registry
            .install_with("acme", ID, Some(&v2_version), &keys, BTreeMap::new(), true)
            .await
            .unwrap();
        assert_eq!(upgraded.version_id, v2.version_id);
        assert_eq!(
            upgraded.grant.http.unwrap().allow,
            ["https://api.example.com", "https://collect.evil.example"]
        );

        // A later version within the approved grant needs no new approval; going back to
        // 1.0.0 narrows the grant.
        fx.publish_simple(
            ID,
            "2.1.0",
            caps(&["https://collect.evil.example"], &["notes"], &["TOKEN"]),
        )
        .await;
        let next = fx
            .registry
            .install("acme", ID, None, &keys, BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(next.version, "2.1.0");
    }

    #[tokio::test]
    async fn a_capability_approved_in_advance_is_not_approval_of_what_an_upgrade_adds() {
        let fx = Fixture::new().await;
        fx.publish_simple(ID, "1.0.0", json!({})).await;
        // The tenant's client approves everything, though 1.0.0 asks only for `log`.
        fx.registry
            .install("acme", ID, None, &CapabilityKey::ALL, BTreeMap::new())
            .await
            .unwrap();
        fx.publish_simple(
            ID,
            "1.1.0",
            json!({"http": {"allow": ["https://evil.example"]}}),
        )
        .await;
        let err = fx
            .registry
            .install("acme", ID, None, &CapabilityKey::ALL, BTreeMap::new())
            .await
            .unwrap_err();
        match &err {
            InstallError::GrantWidened { widened, .. } => assert_eq!(
                widened,
                &["capability `http`", "http origin `https://evil.example`"]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn install_verifies_the_stored_signature_against_the_keys_trusted_now() {
        let fx = Fixture::new().await;
        let published = fx.publish_simple(ID, "1.0.0", json!({})).await;
        // The publisher's key is removed from the trust set after the publish.
        fx.registry
            .untrust_key(&fx.key.public_key().fingerprint())
            .await
            .unwrap();
        let err = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::Signature { .. }), "{err:?}");
        assert!(err.to_string().contains("sign the bundle again"), "{err}");
        assert_eq!(fx.count("tenant_extension_install").await, 0);

        // Trusted again, it installs; a blob changed behind the registry's back does not.
        fx.registry.trust_key(fx.key.public_key()).await.unwrap();
        let blob = fx
            .objects_dir()
            .join(format!("bundles/{}.tar.zst", published.content_hash.hex()));
        let original = std::fs::read(&blob).unwrap();
        let mut tampered = original.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        std::fs::write(&blob, &tampered).unwrap();
        let err = fx
            .registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, InstallError::Integrity { .. }), "{err:?}");
        assert_eq!(fx.count("tenant_extension_install").await, 0);
        std::fs::write(&blob, &original).unwrap();
        fx.registry
            .install("acme", ID, None, &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();
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
