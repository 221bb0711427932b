//! `palisade:extension/secrets`.

/// The host-side service behind the `secrets` capability.
pub trait SecretsBackend: Send + Sync + 'static {}

/// Per-call state of the `secrets` capability.
#[derive(Debug, Default)]
pub struct SecretsState;
