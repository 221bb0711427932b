//! `palisade:extension/secrets`: secret values the tenant's operator set for the install,
//! readable only under the names the install's grant lists.
//!
//! The runtime checks the name against the grant and asks a [`SecretsBackend`] (provided
//! by the runner, which holds the keyring) for the value. What the guest sees:
//! * a name outside the grant → `not-granted` (the backend is not asked);
//! * a granted name with no value → `not-found`;
//! * a backend or decryption failure → `unavailable`; the detail goes to the operator's
//!   log with the invocation's identifiers and the secret's name, never the value.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use zeroize::Zeroizing;

use crate::bindings::current::secrets::{self, Error as WitError};
use crate::capability::{Capability, CapabilityKey, Configure, Linked, Prepare};
use crate::execute::Invocation;
use crate::state::InstanceState;

/// The plaintext of one secret on its way to the guest. `Debug` is redacted, there is no
/// `Display`, and the memory is overwritten on drop.
pub struct SecretPlaintext(Zeroizing<String>);

impl SecretPlaintext {
    /// Wraps a plaintext value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretPlaintext(Zeroizing::new(value.into()))
    }

    /// The plaintext.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPlaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPlaintext(<redacted>)")
    }
}

/// Why the backend could not produce a value. Its text goes to the operator's log only and
/// must never contain a secret value.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SecretsBackendError(Box<dyn std::error::Error + Send + Sync>);

impl SecretsBackendError {
    /// Wraps the backend's own error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        SecretsBackendError(Box::new(error))
    }
}

/// What [`SecretsBackend::get`] returns.
pub type SecretFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<SecretPlaintext>, SecretsBackendError>> + Send + 'a>>;

/// The host-side service behind the `secrets` capability.
pub trait SecretsBackend: Send + Sync + 'static {
    /// The value of secret `name` of install `install_id`, `None` when it is not set.
    /// Grants are checked before this is called.
    fn get<'a>(&'a self, install_id: &'a str, name: &'a str) -> SecretFuture<'a>;
}

/// Per-call state of the `secrets` capability: the granted names and where to read.
#[derive(Default)]
pub struct SecretsState {
    granted: BTreeSet<String>,
    backend: Option<Arc<dyn SecretsBackend>>,
    /// The install whose secrets these are (the call's other identifiers are in its span).
    install_id: String,
}

impl SecretsState {
    /// Prepares the state for one call, or `None` when the grant lists no secret names.
    pub fn new(backend: Option<Arc<dyn SecretsBackend>>, invocation: &Invocation) -> Option<Self> {
        if invocation.grants.secrets.is_empty() {
            return None;
        }
        Some(SecretsState {
            granted: invocation.grants.secrets.iter().cloned().collect(),
            backend,
            install_id: invocation.install_id.clone(),
        })
    }

    /// Looks up `name` for the guest.
    async fn read(&self, name: &str) -> Result<SecretPlaintext, WitError> {
        if !self.granted.contains(name) {
            return Err(WitError::NotGranted);
        }
        let Some(backend) = &self.backend else {
            self.warn(name, "this runner has no secrets backend configured");
            return Err(WitError::Unavailable);
        };
        match backend.get(&self.install_id, name).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(WitError::NotFound),
            Err(error) => {
                self.warn(name, &error.to_string());
                Err(WitError::Unavailable)
            }
        }
    }

    fn warn(&self, name: &str, error: &str) {
        tracing::warn!(secret = name, error, "secret unavailable to the guest");
    }
}

impl std::fmt::Debug for SecretsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsState")
            .field("granted", &self.granted)
            .field("backend", &self.backend.is_some())
            .field("install_id", &self.install_id)
            .finish_non_exhaustive()
    }
}

/// The `secrets` capability: the runner's backend.
pub(crate) struct Secrets {
    backend: Option<Arc<dyn SecretsBackend>>,
}

impl Capability for Secrets {
    const KEY: CapabilityKey = CapabilityKey::Secrets;
    type State = SecretsState;

    fn configure(runtime: &Configure<'_>) -> Self {
        Secrets {
            backend: runtime.services.secrets.clone(),
        }
    }

    fn prepare(&self, call: &Prepare<'_>) -> Option<SecretsState> {
        SecretsState::new(self.backend.clone(), call.invocation)
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        secrets::add_to_linker::<_, Secrets>(linker, |s| s.caps.linked::<Secrets>())
    }
}

impl HasData for Secrets {
    type Data<'a> = Linked<'a, SecretsState>;
}

impl secrets::Host for Linked<'_, SecretsState> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, WitError>> {
        Ok(self
            .state()?
            .read(&name)
            .await
            .map(|value| value.expose().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use palisade_bundle::manifest::Capabilities;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("decryption failed for the test")]
    struct Broken;

    /// Values by (install, name); `BROKEN` fails; every asked name is recorded.
    #[derive(Default)]
    struct Fake {
        values: HashMap<(String, String), String>,
        asked: Mutex<Vec<String>>,
    }

    impl SecretsBackend for Fake {
        fn get<'a>(&'a self, install_id: &'a str, name: &'a str) -> SecretFuture<'a> {
            Box::pin(async move {
                self.asked.lock().unwrap().push(name.to_owned());
                if name == "BROKEN" {
                    return Err(SecretsBackendError::new(Broken));
                }
                Ok(self
                    .values
                    .get(&(install_id.to_owned(), name.to_owned()))
                    .map(|v| SecretPlaintext::new(v.clone())))
            })
        }
    }

    fn invocation(install_id: &str, names: &[&str]) -> Invocation {
        Invocation {
            install_id: install_id.into(),
            grants: Capabilities {
                secrets: names.iter().map(|n| n.to_string()).collect(),
                ..Capabilities::default()
            },
            ..Invocation::default()
        }
    }

    fn fake() -> Arc<Fake> {
        let mut fake = Fake::default();
        fake.values
            .insert(("i-1".into(), "TOKEN".into()), "s3cr3t".into());
        Arc::new(fake)
    }

    /// Calls `get` the way the guest does and names the outcome.
    async fn get(state: &mut SecretsState, name: &str) -> String {
        let mut linked = Linked::new(Some(state), "palisade:extension/secrets");
        match secrets::Host::get(&mut linked, name.into()).await.unwrap() {
            Ok(value) => format!("ok:{value}"),
            Err(WitError::NotGranted) => "not-granted".into(),
            Err(WitError::NotFound) => "not-found".into(),
            Err(WitError::Unavailable) => "unavailable".into(),
        }
    }

    #[tokio::test]
    async fn granted_names_are_read_from_the_backend() {
        let names = ["TOKEN", "UNSET", "BROKEN"];
        let mut state = SecretsState::new(Some(fake()), &invocation("i-1", &names)).unwrap();
        assert_eq!(get(&mut state, "TOKEN").await, "ok:s3cr3t");
        assert_eq!(get(&mut state, "UNSET").await, "not-found");
        assert_eq!(get(&mut state, "BROKEN").await, "unavailable");
    }

    #[tokio::test]
    async fn other_names_are_refused_without_asking_the_backend() {
        let backend = fake();
        let mut state =
            SecretsState::new(Some(backend.clone()), &invocation("i-1", &["OTHER"])).unwrap();
        assert_eq!(get(&mut state, "TOKEN").await, "not-granted");
        assert!(backend.asked.lock().unwrap().is_empty());

        let mut unprepared = SecretsState::default();
        assert_eq!(get(&mut unprepared, "TOKEN").await, "not-granted");
    }

    #[tokio::test]
    async fn values_are_read_for_the_callers_install_only() {
        let mut state = SecretsState::new(Some(fake()), &invocation("i-2", &["TOKEN"])).unwrap();
        assert_eq!(get(&mut state, "TOKEN").await, "not-found");
    }

    #[tokio::test]
    async fn no_backend_is_unavailable() {
        let mut state = SecretsState::new(None, &invocation("i-1", &["TOKEN"])).unwrap();
        assert_eq!(get(&mut state, "TOKEN").await, "unavailable");
    }

    #[test]
    fn nothing_is_prepared_without_granted_names() {
        assert!(SecretsState::new(Some(fake()), &invocation("i-1", &[])).is_none());
    }

    #[test]
    fn debug_output_never_shows_values() {
        let value = SecretPlaintext::new("s3cr3t");
        assert_eq!(format!("{value:?}"), "SecretPlaintext(<redacted>)");
        assert_eq!(value.expose(), "s3cr3t");
        let state = SecretsState::new(Some(fake()), &invocation("i-1", &["TOKEN"])).unwrap();
        let printed = format!("{state:?}");
        assert!(
            printed.contains("TOKEN") && !printed.contains("s3cr3t"),
            "{printed}"
        );
    }
}
