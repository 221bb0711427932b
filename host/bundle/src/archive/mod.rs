//! `bundle.tar.zst`: reproducible packing and bounded, strict unpacking.
//!
//! A bundle holds `manifest.json`, the component at the path the manifest names, and the
//! UI assets under `ui/`. Nothing else.

mod pack;
mod unpack;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::hash::ContentHash;
use crate::manifest::{Manifest, ManifestError};

pub use pack::{pack, pack_dir};
pub use unpack::{unpack, unpack_verified};

/// Name of the manifest inside a bundle.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Directory of the UI assets inside a bundle.
pub const UI_DIR: &str = "ui";
/// The zstd level bundles are compressed with (fixed, so packing is reproducible).
pub const ZSTD_LEVEL: i32 = 19;

/// Bounds applied while unpacking an untrusted bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most tar entries (files and directories) accepted.
    pub max_entries: usize,
    /// Most bytes of file content, all files together.
    pub max_total_bytes: u64,
    /// Most bytes of a single file.
    pub max_file_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_entries: 1000,
            max_total_bytes: 64 * 1024 * 1024,
            max_file_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The contents of an unpacked bundle.
#[derive(Clone, PartialEq)]
pub struct Bundle {
    /// The parsed, validated manifest.
    pub manifest: Manifest,
    /// `manifest.json` exactly as stored in the bundle.
    pub manifest_json: Vec<u8>,
    /// The WebAssembly component.
    pub component: Vec<u8>,
    /// UI assets keyed by their path below `ui/` (e.g. `index.html`, `assets/app.js`).
    pub ui: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("id", &self.manifest.id)
            .field("version", &self.manifest.version.to_string())
            .field("component_bytes", &self.component.len())
            .field("ui_files", &self.ui.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a bundle could not be packed or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// `manifest.json` does not parse or validate.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component name given to [`pack`] is not the one the manifest names.
    #[error("component `{given}` does not match the manifest's `component` `{manifest}`")]
    ComponentMismatch {
        /// The name passed in.
        given: String,
        /// The manifest's `component`.
        manifest: String,
    },
    /// An entry's path is unsafe or malformed.
    #[error("bundle entry `{path}`: {reason}")]
    InvalidPath {
        /// The path as found (lossily decoded).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries have the same path.
    #[error("bundle has `{path}` twice")]
    Duplicate {
        /// The repeated path.
        path: String,
    },
    /// An entry is a link, device, FIFO or other non-regular file.
    #[error("bundle entry `{path}` is a {kind}; only regular files (and directories) are allowed")]
    NotRegularFile {
        /// The entry's path.
        path: String,
        /// What it is.
        kind: String,
    },
    /// A file that is neither the manifest, the component nor under `ui/`.
    #[error(
        "bundle entry `{path}` is not allowed: a bundle holds only `manifest.json`, the component `{component}` and files under `ui/`"
    )]
    Unexpected {
        /// The entry's path.
        path: String,
        /// The component path the manifest names.
        component: String,
    },
    /// A required file is absent.
    #[error("bundle has no {0}")]
    Missing(String),
    /// The manifest's `ui.entry` is not among the UI files.
    #[error("manifest field `ui.entry`: `{0}` is not in the bundle's `ui/` directory")]
    UiEntryMissing(String),
    /// More entries than [`UnpackLimits::max_entries`].
    #[error("bundle has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// One file is larger than [`UnpackLimits::max_file_bytes`].
    #[error("bundle entry `{path}` is larger than the limit of {max} bytes")]
    FileTooLarge {
        /// The entry's path.
        path: String,
        /// The limit.
        max: u64,
    },
    /// The files together exceed [`UnpackLimits::max_total_bytes`].
    #[error("bundle unpacks to more than the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The bytes are not a well-formed zstd-compressed tar archive.
    #[error("bundle is not a valid tar.zst archive: {0}")]
    Corrupt(String),
    /// The bundle's bytes do not have the expected content hash.
    #[error("bundle content hash is {actual}, expected {expected}")]
    HashMismatch {
        /// The hash the caller expected.
        expected: ContentHash,
        /// The hash of the bytes.
        actual: ContentHash,
    },
    /// A file of the source directory is a symbolic link.
    #[error("`{0}` is a symbolic link; bundles carry regular files only")]
    Symlink(PathBuf),
    /// A source file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the archive failed.
    #[error("cannot write the bundle archive: {0}")]
    Write(std::io::Error),
}

/// Checks that the manifest's `ui.entry`, if any, is one of the UI files.
fn check_ui_entry<'a>(
    manifest: &Manifest,
    mut ui_paths: impl Iterator<Item = &'a str>,
) -> Result<(), ArchiveError> {
    match &manifest.ui {
        Some(ui) if !ui_paths.any(|p| p == ui.entry) => {
            Err(ArchiveError::UiEntryMissing(ui.entry.clone()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
