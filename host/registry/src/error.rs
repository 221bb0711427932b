//! Error types returned by the registry.

use std::path::PathBuf;

use palisade_bundle::archive::ArchiveError;
use palisade_bundle::component::ComponentError;
use palisade_bundle::imports::ImportError;
use palisade_bundle::manifest::ManifestError;
use palisade_bundle::signing::SigningError;

/// A failure of the registry's database or object store, or data in them that no longer
/// makes sense.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database URL names a database this build does not support.
    #[error(
        "unsupported database URL `{url}`: use a `sqlite:` or a `postgres://` (or \
         `postgresql://`) URL"
    )]
    UnsupportedDatabase {
        /// The URL, with any password removed.
        url: String,
    },
    /// The database URL could not be parsed.
    #[error("invalid database URL `{url}`: {source}")]
    InvalidDatabaseUrl {
        /// The URL, with any password removed.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the registry database `{url}`: {source}")]
    Connect {
        /// The URL, with any password removed.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The PostgreSQL `search_path` names no schema the registry can create.
    #[error(
        "the registry's PostgreSQL schema does not exist and `search_path` ({search_path}) \
         names none that can be created: use a lower-case name of letters, digits and `_`"
    )]
    InvalidSchema {
        /// The connection's `search_path`.
        search_path: String,
    },
    /// A file or directory the registry needs could not be created or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A query failed.
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("registry database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The object store failed.
    #[error("registry object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A bundle the database refers to is not in the object store.
    #[error("bundle {hash} is missing from the object store (object `{key}`)")]
    BundleMissing {
        /// Content hash of the bundle.
        hash: String,
        /// The object key that was not found.
        key: String,
    },
    /// An object read back does not hash to what its key says: it was corrupted or
    /// substituted in the object store.
    #[error(
        "object `{key}` in the object store is corrupt or was substituted: it should hash to \
         {expected} but hashes to {actual}"
    )]
    ObjectMismatch {
        /// The object's key.
        key: String,
        /// The SHA-256 its key names.
        expected: String,
        /// The SHA-256 of the bytes read.
        actual: String,
    },
    /// The object store's location or settings are unusable.
    #[error("object store `{location}`: {reason}")]
    InvalidObjectStore {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored row holds a value that cannot be read back.
    #[error("corrupt registry row in `{table}` (column `{column}`, key `{key}`): {reason}")]
    CorruptRow {
        /// The table the row is in.
        table: &'static str,
        /// The column that could not be read.
        column: &'static str,
        /// The row's primary key.
        key: String,
        /// Why the value is unusable.
        reason: String,
    },
}

impl RegistryError {
    /// Whether the error is data that cannot be read (a corrupt row, or an object that does
    /// not match its key) rather than a failure that may pass (the database or the object
    /// store not answering). Every API answers the first `internal` and the rest
    /// `unavailable`.
    pub fn is_corrupt_data(&self) -> bool {
        matches!(
            self,
            RegistryError::CorruptRow { .. } | RegistryError::ObjectMismatch { .. }
        )
    }

    /// Builds a [`RegistryError::CorruptRow`].
    pub(crate) fn corrupt(
        table: &'static str,
        column: &'static str,
        key: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        Self::CorruptRow {
            table,
            column,
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

/// The stored manifest of version `version_id`, or the corrupt-row error naming it.
pub(crate) fn stored_manifest(
    version_id: &str,
    manifest_json: &str,
) -> Result<palisade_bundle::manifest::Manifest, RegistryError> {
    palisade_bundle::manifest::Manifest::from_json(manifest_json.as_bytes())
        .map_err(|e| RegistryError::corrupt("extension_version", "manifest_json", version_id, e))
}

/// Why a tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tenant id `{tenant_id}`: expected 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"
)]
pub struct InvalidTenantId {
    /// The refused id.
    pub tenant_id: String,
}

/// Why an install, upgrade, uninstall or enable/disable was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The tenant id is malformed.
    #[error(transparent)]
    InvalidTenantId(#[from] InvalidTenantId),
    /// The extension, or the requested version of it, is not published.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for, e.g. `extension com.example.x version 1.2.0`.
        what: String,
    },
    /// The manifest requests capabilities the tenant did not approve.
    #[error("capabilities requested by {extension_id} {version} are not approved: {}", missing.join(", "))]
    NotApproved {
        /// The extension id.
        extension_id: String,
        /// The version being installed.
        version: String,
        /// The capability keys requested but not approved.
        missing: Vec<String>,
    },
    /// Moving the install to this version would grant more than the tenant approved for
    /// the installed version; nothing changed.
    #[error(
        "upgrading {extension_id} from {installed} to {version} widens the grant the tenant approved: {}; nothing changed (to approve it, name the version and approve the widened grant)",
        widened.join(", ")
    )]
    GrantWidened {
        /// The extension id.
        extension_id: String,
        /// The installed version.
        installed: String,
        /// The version asked for.
        version: String,
        /// What it would grant beyond the approved grant, one item each.
        widened: Vec<String>,
    },
    /// The stored bundle's signature is not verified by any key trusted now (its key was
    /// removed): it must be signed again with a trusted key and published again.
    #[error(
        "cannot install {extension_id} {version}: its signature is not verified by a trusted key ({source}); sign the bundle again with a trusted key and publish it again"
    )]
    Signature {
        /// The extension id.
        extension_id: String,
        /// The version being installed.
        version: String,
        /// Why the signature was refused.
        #[source]
        source: SigningError,
    },
    /// The stored bundle does not match its content hash.
    #[error(
        "cannot install {extension_id} {version}: bundle {content_hash} failed its integrity check: {reason}"
    )]
    Integrity {
        /// The extension id.
        extension_id: String,
        /// The version being installed.
        version: String,
        /// The content hash on record.
        content_hash: String,
        /// What failed.
        reason: String,
    },
    /// Approving a widened grant needs the version named.
    #[error(
        "approving a widened grant of {extension_id} needs the version named: the approval holds for the version the tenant reviewed"
    )]
    VersionRequired {
        /// The extension id.
        extension_id: String,
    },
    /// The component imports something the granted capabilities do not cover.
    #[error("cannot install {extension_id} {version}: {source}")]
    Imports {
        /// The extension id.
        extension_id: String,
        /// The version being installed.
        version: String,
        /// The refused import.
        #[source]
        source: ImportError,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for InstallError {
    fn from(err: sqlx::Error) -> Self {
        Self::Registry(err.into())
    }
}

/// Why a bundle was refused at publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No trusted key verifies the signature over the bundle bytes.
    #[error("bundle signature refused: {0}")]
    Signature(#[source] SigningError),
    /// The archive is malformed, unsafe or over the unpack limits.
    #[error("bundle refused: {0}")]
    Archive(#[source] ArchiveError),
    /// `manifest.json` does not parse or validate.
    #[error("bundle refused: {0}")]
    Manifest(#[source] ManifestError),
    /// The component imports something its manifest does not grant (or that is never
    /// provided).
    #[error("bundle refused: {0}")]
    Imports(#[source] ImportError),
    /// The component is one the runners' engine would not load (features, per-component
    /// caps, memory or table sizes).
    #[error("bundle refused: {0}")]
    Component(#[source] ComponentError),
    /// The version is already published with different bytes.
    #[error(
        "{extension_id} {version} is already published with content hash {existing}; this bundle is {attempted}. Publish it under a new version"
    )]
    VersionExists {
        /// The extension id.
        extension_id: String,
        /// The version.
        version: String,
        /// Content hash of the published bundle.
        existing: String,
        /// Content hash of the refused bundle.
        attempted: String,
    },
    /// The manifest names another publisher than the one the extension id is registered to.
    #[error(
        "extension {extension_id} is registered to publisher `{registered}`, but this manifest names `{manifest}`"
    )]
    PublisherMismatch {
        /// The extension id.
        extension_id: String,
        /// The publisher on record.
        registered: String,
        /// The publisher in the refused manifest.
        manifest: String,
    },
    /// The extension id belongs to other keys: the key of its first publish and any the
    /// operator allowed for it.
    #[error(
        "extension {extension_id} belongs to key {}; this bundle is signed by {signer}, which is not allowed for it (the operator can allow it with `palisade trust add KEY --extension {extension_id}`)",
        allowed.join(", ")
    )]
    SignerNotAllowed {
        /// The extension id.
        extension_id: String,
        /// Fingerprints of the keys allowed to sign it, the first publish's key first.
        allowed: Vec<String>,
        /// Fingerprint of the key that signed the refused bundle.
        signer: String,
    },
    /// The bundle checks were interrupted (the runtime is shutting down).
    #[error("publish interrupted before the bundle was checked")]
    Interrupted,
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<ArchiveError> for PublishError {
    fn from(err: ArchiveError) -> Self {
        match err {
            ArchiveError::Manifest(err) => Self::Manifest(err),
            other => Self::Archive(other),
        }
    }
}

impl From<sqlx::Error> for PublishError {
    fn from(err: sqlx::Error) -> Self {
        Self::Registry(err.into())
    }
}

/// Why a change to the publisher trust (trusted keys, keys allowed per extension id) was
/// refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The extension id is not a valid manifest id.
    #[error("invalid extension id `{extension_id}`: {reason}")]
    InvalidExtensionId {
        /// The refused id.
        extension_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for TrustError {
    fn from(err: sqlx::Error) -> Self {
        Self::Registry(err.into())
    }
}
