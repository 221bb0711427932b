//! Sealed secrets per install: set, list, delete and read, plus re-sealing under a new
//! primary key. Values are sealed by [`SecretSealer`] — a public key, so whoever seals
//! cannot open — before they reach the database, and opened only by the holder of the
//! private keyring, [`SecretOpener`] (the runner); the registry stores key id,
//! encapsulated key and ciphertext, never plaintext.
//!
//! A secret belongs to an install (keyed by install id), so it survives upgrades and is
//! removed with the install.

mod sealer;
mod value;

use std::collections::BTreeMap;

use sqlx::Row;

use crate::Registry;
use crate::db::now_millis;
use crate::error::{InvalidTenantId, RegistryError};
use crate::install::validate_tenant_id;

pub use sealer::{
    ENCAPPED_KEY_BYTES, LegacyKeyring, LegacySecretKey, NONCE_BYTES, SECRET_KEY_BYTES, SealError,
    SealedSecret, SecretKey, SecretKeyError, SecretOpener, SecretPublicKey, SecretSealer,
};
pub use value::SecretValue;

/// Largest secret value accepted, in bytes.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// A secret stored for an install, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's name.
    pub name: String,
    /// Id of the key that sealed it.
    pub key_id: String,
    /// When the value was last set, unix epoch milliseconds.
    pub updated_at_ms: i64,
}

/// What [`Registry::reseal_secrets`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Values now sealed with the primary key that were sealed with another before.
    pub resealed: u64,
    /// Values that changed while being re-sealed and were left as written.
    pub skipped: u64,
    /// Values that could not be opened: (install id, name, reason).
    pub failed: Vec<(String, String, String)>,
    /// Number of stored values per key id, after re-sealing.
    pub remaining: BTreeMap<String, u64>,
}

/// Why a secret operation failed. Messages never contain a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The tenant id is malformed.
    #[error(transparent)]
    InvalidTenantId(#[from] InvalidTenantId),
    /// The tenant has no install of the extension.
    #[error("tenant `{tenant_id}` has no install of extension `{extension_id}`")]
    InstallNotFound {
        /// The tenant.
        tenant_id: String,
        /// The extension id.
        extension_id: String,
    },
    /// The installed manifest does not list the name.
    #[error(
        "secret `{name}` is not listed in the manifest of {extension_id} {version} \
         (capabilities.secrets lists {})",
        listed(declared)
    )]
    NotDeclared {
        /// The refused name.
        name: String,
        /// The extension id.
        extension_id: String,
        /// The installed version.
        version: String,
        /// The names the manifest lists.
        declared: Vec<String>,
    },
    /// The value is empty.
    #[error("the value of secret `{name}` is empty")]
    EmptyValue {
        /// The secret's name.
        name: String,
    },
    /// The value exceeds [`MAX_SECRET_VALUE_BYTES`].
    #[error("the value of secret `{name}` is {len} bytes; at most {max} bytes are accepted")]
    TooLarge {
        /// The secret's name.
        name: String,
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No secret of that name is set for the install.
    #[error("no secret `{name}` is set for tenant `{tenant_id}`'s install of `{extension_id}`")]
    NotSet {
        /// The tenant.
        tenant_id: String,
        /// The extension id.
        extension_id: String,
        /// The secret's name.
        name: String,
    },
    /// Sealing or opening failed.
    #[error("secret `{name}` of install {install_id}: {error}")]
    Seal {
        /// The install.
        install_id: String,
        /// The secret's name.
        name: String,
        /// What went wrong.
        error: SealError,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for SecretError {
    fn from(err: sqlx::Error) -> Self {
        Self::Registry(err.into())
    }
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no names".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An install (enabled or not) with the secret names its manifest lists.
struct InstallSecrets {
    install_id: String,
    version: String,
    declared: Vec<String>,
}

impl Registry {
    /// Seals `value` and stores it as secret `name` of `tenant_id`'s install of
    /// `extension_id`, replacing any previous value. The name must be listed in the
    /// installed manifest's `capabilities.secrets`.
    pub async fn set_secret(
        &self,
        sealer: &SecretSealer,
        tenant_id: &str,
        extension_id: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let install = self
            .install_declaring(tenant_id, extension_id, name)
            .await?;
        if value.is_empty() {
            return Err(SecretError::EmptyValue {
                name: name.to_owned(),
            });
        }
        if value.len() > MAX_SECRET_VALUE_BYTES {
            return Err(SecretError::TooLarge {
                name: name.to_owned(),
                len: value.len(),
                max: MAX_SECRET_VALUE_BYTES,
            });
        }
        let sealed = sealer
            .seal(&install.install_id, name, value)
            .map_err(|error| SecretError::Seal {
                install_id: install.install_id.clone(),
                name: name.to_owned(),
                error,
            })?;
        sqlx::query(
            "INSERT INTO extension_secret (install_id, name, nonce, ciphertext, key_id, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (install_id, name) DO UPDATE SET \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             key_id = excluded.key_id, updated_at = excluded.updated_at",
        )
        .bind(&install.install_id)
        .bind(name)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(&sealed.key_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        tracing::info!(
            tenant_id,
            extension_id,
            install_id = %install.install_id,
            secret = name,
            key_id = %sealed.key_id,
            "secret set"
        );
        Ok(())
    }

    /// Checks that `tenant_id` has an install of `extension_id` whose manifest lists the
    /// secret `name`, as [`Registry::set_secret`] does before it writes.
    pub async fn check_secret_name(
        &self,
        tenant_id: &str,
        extension_id: &str,
        name: &str,
    ) -> Result<(), SecretError> {
        self.install_declaring(tenant_id, extension_id, name)
            .await
            .map(|_| ())
    }

    /// The secrets stored for `tenant_id`'s install of `extension_id`, by name.
    pub async fn list_secrets(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<Vec<SecretInfo>, SecretError> {
        let install = self.install_secrets(tenant_id, extension_id).await?;
        let rows = sqlx::query(
            "SELECT name, key_id, updated_at FROM extension_secret \
             WHERE install_id = $1 ORDER BY name",
        )
        .bind(&install.install_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SecretInfo {
                    name: row.try_get("name")?,
                    key_id: row.try_get("key_id")?,
                    updated_at_ms: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Deletes secret `name` of `tenant_id`'s install of `extension_id`. A stored value is
    /// deleted even when a newer manifest no longer lists its name; a name that is neither
    /// stored nor listed is [`SecretError::NotDeclared`], a listed one that is not stored
    /// [`SecretError::NotSet`].
    pub async fn delete_secret(
        &self,
        tenant_id: &str,
        extension_id: &str,
        name: &str,
    ) -> Result<(), SecretError> {
        let install = self.install_secrets(tenant_id, extension_id).await?;
        let done = sqlx::query("DELETE FROM extension_secret WHERE install_id = $1 AND name = $2")
            .bind(&install.install_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            tracing::info!(
                tenant_id,
                extension_id,
                install_id = %install.install_id,
                secret = name,
                "secret deleted"
            );
            return Ok(());
        }
        if install.declared.iter().any(|n| n == name) {
            Err(SecretError::NotSet {
                tenant_id: tenant_id.to_owned(),
                extension_id: extension_id.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(SecretError::NotDeclared {
                name: name.to_owned(),
                extension_id: extension_id.to_owned(),
                version: install.version,
                declared: install.declared,
            })
        }
    }

    /// Opens secret `name` of install `install_id` with the runners' keyring; `None` when
    /// it is not set. This does not check grants: the caller decides who may read.
    pub async fn read_secret(
        &self,
        opener: &SecretOpener,
        install_id: &str,
        name: &str,
    ) -> Result<Option<SecretValue>, SecretError> {
        let _timer = self.queries.time("read_secret");
        let row = sqlx::query(
            "SELECT nonce, ciphertext, key_id FROM extension_secret \
             WHERE install_id = $1 AND name = $2",
        )
        .bind(install_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed = SealedSecret {
            key_id: row.try_get("key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        };
        opener
            .open(install_id, name, &sealed)
            .map(Some)
            .map_err(|error| SecretError::Seal {
                install_id: install_id.to_owned(),
                name: name.to_owned(),
                error,
            })
    }

    /// Re-seals every stored value that is not sealed to `opener`'s primary key — values
    /// sealed to an older key of the keyring, and values an earlier version sealed with
    /// the symmetric keyring (when `opener` holds it: the migration) — so that older keys
    /// can leave the keyring. Values that cannot be opened are reported, not changed; a
    /// value set concurrently is left as its writer sealed it.
    pub async fn reseal_secrets(&self, opener: &SecretOpener) -> Result<ResealReport, SecretError> {
        let primary = opener.primary_key_id();
        let rows = sqlx::query(
            "SELECT install_id, name, nonce, ciphertext, key_id FROM extension_secret \
             WHERE key_id <> $1 ORDER BY install_id, name",
        )
        .bind(primary)
        .fetch_all(&self.pool)
        .await?;
        let mut report = ResealReport::default();
        for row in &rows {
            let install_id: String = row.try_get("install_id")?;
            let name: String = row.try_get("name")?;
            let old = SealedSecret {
                key_id: row.try_get("key_id")?,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            };
            let resealed = opener
                .open(&install_id, &name, &old)
                .and_then(|value| opener.seal(&install_id, &name, &value));
            let new = match resealed {
                Ok(new) => new,
                Err(err) => {
                    tracing::warn!(install_id, secret = name, error = %err, "cannot re-seal secret");
                    report.failed.push((install_id, name, err.to_string()));
                    continue;
                }
            };
            let done = sqlx::query(
                "UPDATE extension_secret SET nonce = $1, ciphertext = $2, key_id = $3 \
                 WHERE install_id = $4 AND name = $5 AND key_id = $6 AND nonce = $7",
            )
            .bind(&new.nonce)
            .bind(&new.ciphertext)
            .bind(&new.key_id)
            .bind(&install_id)
            .bind(&name)
            .bind(&old.key_id)
            .bind(&old.nonce)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() > 0 {
                report.resealed += 1;
            } else {
                report.skipped += 1;
            }
        }
        report.remaining = self.secret_key_usage().await?;
        tracing::info!(
            primary,
            resealed = report.resealed,
            skipped = report.skipped,
            failed = report.failed.len(),
            "secrets re-sealed"
        );
        Ok(report)
    }

    /// Number of stored secret values per key id.
    pub async fn secret_key_usage(&self) -> Result<BTreeMap<String, u64>, SecretError> {
        let rows = sqlx::query(
            "SELECT key_id, COUNT(*) AS values_count FROM extension_secret GROUP BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get("values_count")?;
                Ok((
                    row.try_get("key_id")?,
                    u64::try_from(count).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Like [`Registry::install_secrets`], refusing a name the manifest does not list.
    async fn install_declaring(
        &self,
        tenant_id: &str,
        extension_id: &str,
        name: &str,
    ) -> Result<InstallSecrets, SecretError> {
        let install = self.install_secrets(tenant_id, extension_id).await?;
        if install.declared.iter().any(|n| n == name) {
            Ok(install)
        } else {
            Err(SecretError::NotDeclared {
                name: name.to_owned(),
                extension_id: extension_id.to_owned(),
                version: install.version,
                declared: install.declared,
            })
        }
    }

    /// The install of `extension_id` by `tenant_id` (enabled or not) and the secret names
    /// its manifest lists.
    async fn install_secrets(
        &self,
        tenant_id: &str,
        extension_id: &str,
    ) -> Result<InstallSecrets, SecretError> {
        validate_tenant_id(tenant_id)?;
        let row = sqlx::query(
            "SELECT i.id AS install_id, v.id AS version_id, v.version, v.manifest_json \
             FROM tenant_extension_install i JOIN extension_version v ON v.id = i.version_id \
             WHERE i.tenant_id = $1 AND i.extension_id = $2",
        )
        .bind(tenant_id)
        .bind(extension_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| SecretError::InstallNotFound {
            tenant_id: tenant_id.to_owned(),
            extension_id: extension_id.to_owned(),
        })?;
        let version_id: String = row.try_get("version_id")?;
        let manifest_json: String = row.try_get("manifest_json")?;
        let manifest = crate::error::stored_manifest(&version_id, &manifest_json)?;
        Ok(InstallSecrets {
            install_id: row.try_get("install_id")?,
            version: row.try_get("version")?,
            declared: manifest.capabilities.secrets,
        })
    }
}

#[cfg(test)]
mod tests;
