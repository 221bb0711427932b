//! `palisade:extension/storage`.

/// The host-side service behind the `storage` capability.
pub trait StorageBackend: Send + Sync + 'static {}

/// Per-call state of the `storage` capability.
#[derive(Debug, Default)]
pub struct StorageState;
