//! Scoped admin credentials: bearer tokens the operator issues for one part of the admin
//! API, so that a host application need not hold the admin token. Scopes: `events`
//! (publishing events) and `metrics` (scraping a gateway's `/metrics`). A token is 32 random bytes, shown once when it is made;
//! the registry keeps its SHA-256 only.

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Registry;
use crate::db::{is_unique_violation, now_millis};
use crate::error::RegistryError;

/// Prefix of every credential token, so that one is recognisable in a configuration.
pub const TOKEN_PREFIX: &str = "palisade_cred_";

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialScope {
    /// `POST /admin/v1/events`.
    Events,
    /// `GET /metrics` on a gateway.
    Metrics,
}

impl CredentialScope {
    /// The stored and answered word.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialScope::Events => "events",
            CredentialScope::Metrics => "metrics",
        }
    }
}

impl std::str::FromStr for CredentialScope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "events" => Ok(CredentialScope::Events),
            "metrics" => Ok(CredentialScope::Metrics),
            other => Err(format!(
                "`{other}` is not a credential scope (events, metrics)"
            )),
        }
    }
}

/// A credential as listed (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The operator's name for it.
    pub name: String,
    /// What it may do.
    pub scope: CredentialScope,
    /// When it was made.
    pub created_at_ms: i64,
}

/// Why a credential operation is refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The name is malformed.
    #[error("a credential name is 1 to 64 letters, digits, `-`, `_` and `.`; `{0}` is not")]
    InvalidName(String),
    /// A credential of that name exists.
    #[error("a credential named `{0}` exists; remove it first")]
    Exists(String),
    /// The database failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Registry {
    /// Makes a credential named `name` with `scope`; returns its token, which is not kept.
    pub async fn add_credential(
        &self,
        name: &str,
        scope: CredentialScope,
    ) -> Result<String, CredentialError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(CredentialError::InvalidName(name.to_owned()));
        }
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let _turn = self.write_turn().await;
        let inserted = sqlx::query(
            "INSERT INTO admin_credential (name, scope, token_sha256, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(scope.as_str())
        .bind(digest(&token))
        .bind(now_millis())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {
                tracing::info!(name, scope = scope.as_str(), "admin credential added");
                Ok(token)
            }
            Err(e) if is_unique_violation(&e) => Err(CredentialError::Exists(name.to_owned())),
            Err(e) => Err(RegistryError::from(e).into()),
        }
    }

    /// Every credential, by name.
    pub async fn list_credentials(&self) -> Result<Vec<Credential>, RegistryError> {
        let rows =
            sqlx::query("SELECT name, scope, created_at FROM admin_credential ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let scope: String = row.try_get("scope")?;
                Ok(Credential {
                    scope: scope.parse().map_err(|e: String| {
                        RegistryError::corrupt("admin_credential", "scope", &name, e)
                    })?,
                    created_at_ms: row.try_get("created_at")?,
                    name,
                })
            })
            .collect()
    }

    /// Removes the credential named `name`; returns whether there was one.
    pub async fn remove_credential(&self, name: &str) -> Result<bool, RegistryError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM admin_credential WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            tracing::info!(name, "admin credential removed");
        }
        Ok(done.rows_affected() > 0)
    }

    /// The scope of the credential whose token is `token`, if there is one.
    pub async fn credential_scope(
        &self,
        token: &str,
    ) -> Result<Option<CredentialScope>, RegistryError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let scope: Option<String> =
            sqlx::query_scalar("SELECT scope FROM admin_credential WHERE token_sha256 = $1")
                .bind(digest(token))
                .fetch_optional(&self.pool)
                .await?;
        Ok(scope.and_then(|s| s.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Fixture;

    #[tokio::test]
    async fn a_credential_is_found_by_its_token_until_removed() {
        let fx = Fixture::new().await;
        let token = fx
            .registry
            .add_credential("helpdesk-app", CredentialScope::Events)
            .await
            .unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(
            fx.registry.credential_scope(&token).await.unwrap(),
            Some(CredentialScope::Events)
        );
        assert_eq!(
            fx.registry
                .credential_scope(&format!("{token}0"))
                .await
                .unwrap(),
            None
        );
        let listed = fx.registry.list_credentials().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "helpdesk-app");

        let err = fx
            .registry
            .add_credential("helpdesk-app", CredentialScope::Events)
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialError::Exists(_)), "{err}");
        let err = fx
            .registry
            .add_credential("no spaces", CredentialScope::Events)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`no spaces`"), "{err}");

        assert!(fx.registry.remove_credential("helpdesk-app").await.unwrap());
        assert!(!fx.registry.remove_credential("helpdesk-app").await.unwrap());
        assert_eq!(fx.registry.credential_scope(&token).await.unwrap(), None);
    }
}
