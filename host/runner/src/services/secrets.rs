//! The `secrets` capability's backend: values read from the registry and opened with the
//! runners' private keyring, inside the runner only.

use palisade_registry::{Registry, SecretOpener};
use palisade_runtime::capability::secrets::{
    SecretFuture, SecretPlaintext, SecretsBackend, SecretsBackendError,
};

/// Reads sealed secrets from the registry and opens them with the keyring.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySecrets {
    registry: Registry,
    opener: SecretOpener,
}

impl RegistrySecrets {
    /// A backend over `registry` that opens values with `opener`.
    pub(crate) fn new(registry: Registry, opener: SecretOpener) -> Self {
        RegistrySecrets { registry, opener }
    }
}

impl SecretsBackend for RegistrySecrets {
    fn get<'a>(&'a self, install_id: &'a str, name: &'a str) -> SecretFuture<'a> {
        Box::pin(async move {
            match self
                .registry
                .read_secret(&self.opener, install_id, name)
                .await
            {
                Ok(value) => Ok(value.map(|v| SecretPlaintext::new(v.expose()))),
                Err(error) => Err(SecretsBackendError::new(error)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use palisade_registry::secrets::SecretKey;

    use super::*;

    async fn backend(dir: &tempfile::TempDir) -> (Registry, RegistrySecrets) {
        let registry = palisade_registry::testing::open(dir.path()).await;
        let opener = SecretOpener::new(SecretKey::generate(), []).unwrap();
        (registry.clone(), RegistrySecrets::new(registry, opener))
    }

    #[tokio::test]
    async fn an_unset_secret_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let (_, backend) = backend(&dir).await;
        assert!(backend.get("install-1", "TOKEN").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_registry_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, backend) = backend(&dir).await;
        registry.pool().close().await;
        let err = backend.get("install-1", "TOKEN").await.unwrap_err();
        assert!(err.to_string().contains("registry database"), "{err}");
    }
}
