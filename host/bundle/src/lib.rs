//! Everything about an extension's bundle that does not need a runtime: the manifest model
//! and its validation, reproducible `bundle.tar.zst` packing and bounded unpacking, content
//! hashes, publisher signatures and trust bundles, and the check of a component's imports
//! against the capabilities its manifest grants.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod archive;
pub mod component;
pub mod hash;
pub mod imports;
pub mod manifest;
mod paths;
pub mod signing;

pub use archive::{
    ArchiveError, Bundle, MANIFEST_PATH, UnpackLimits, pack, pack_dir, unpack, unpack_verified,
};
pub use component::{
    ComponentError, ComponentLimits, ComponentUsage, ENGINE_FEATURES, check_component,
};
pub use hash::{ContentHash, ContentHashError};
pub use imports::{ImportError, check_imports, component_imports};
pub use manifest::{
    AllowedOrigin, Api, CAPABILITIES, Capabilities, CapabilityKey, CapabilitySpec, Endpoint,
    EventSubscription, HttpCapability, Limits, Manifest, ManifestError, OriginError,
    RUNTIME_WASI_HTTP, Schedule, StorageCapability, Ui, UnknownCapability,
};
pub use signing::{
    InvalidFingerprint, KeyAlgorithm, KeyFingerprint, PublicKey, SigningError, SigningKey,
    TrustBundle, decode_signature,
};
