//! Bounded, strict unpacking of an untrusted bundle.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};

use super::{ArchiveError, Bundle, MANIFEST_PATH, UI_DIR, UnpackLimits, check_ui_entry};
use crate::hash::ContentHash;
use crate::manifest::Manifest;
use crate::paths::check_relative_path;

/// Largest zstd window accepted (2^24 = 16 MiB), which bounds the decoder's memory.
const MAX_WINDOW_LOG: u32 = 24;
/// Tar bytes allowed per entry beyond its content: headers, long names, padding.
const OVERHEAD_PER_ENTRY: u64 = 4096;
/// Tar bytes allowed beyond all entries: end-of-archive blocks and record padding.
const OVERHEAD_FIXED: u64 = 64 * 1024;

/// Unpacks `bytes` after checking that their content hash is `expected`; nothing is
/// decompressed when it is not.
pub fn unpack_verified(
    bytes: &[u8],
    expected: &ContentHash,
    limits: &UnpackLimits,
) -> Result<Bundle, ArchiveError> {
    let actual = ContentHash::of(bytes);
    if actual != *expected {
        return Err(ArchiveError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    unpack(bytes, limits)
}

/// Unpacks an untrusted `bundle.tar.zst` within `limits`. Refuses absolute paths, `..`,
/// links and other non-regular entries, duplicates and any file other than
/// `manifest.json`, the manifest's component and `ui/**`.
pub fn unpack(bytes: &[u8], limits: &UnpackLimits) -> Result<Bundle, ArchiveError> {
    let exceeded = Cell::new(false);
    let files = read_files(bytes, limits, &exceeded).map_err(|err| match err {
        ArchiveError::Corrupt(_) if exceeded.get() => ArchiveError::TooLarge {
            max: limits.max_total_bytes,
        },
        other => other,
    })?;
    assemble(files)
}

/// Reads at most `remaining` bytes from `inner`, then fails and raises `exceeded`.
struct Bounded<'a, R> {
    inner: R,
    remaining: u64,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if more data actually follows.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other(
                        "decompressed bundle exceeds its size limit",
                    ))
                }
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn corrupt(err: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt(err.to_string())
}

/// Decompresses and reads every regular file into a map, enforcing all limits.
fn read_files(
    bytes: &[u8],
    limits: &UnpackLimits,
    exceeded: &Cell<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, ArchiveError> {
    let mut decoder = zstd::stream::Decoder::new(bytes).map_err(corrupt)?;
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(corrupt)?;
    let budget = limits
        .max_total_bytes
        .saturating_add(OVERHEAD_PER_ENTRY.saturating_mul(limits.max_entries as u64))
        .saturating_add(OVERHEAD_FIXED);
    let reader = Bounded {
        inner: decoder,
        remaining: budget,
        exceeded,
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                max: limits.max_entries,
            });
        }
        let raw_path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            directory_path(&raw_path)?;
            continue;
        }
        let path = file_path(&raw_path)?;
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(ArchiveError::NotRegularFile {
                path,
                kind: kind_name(kind).to_owned(),
            });
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(ArchiveError::FileTooLarge {
                path,
                max: limits.max_file_bytes,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(ArchiveError::TooLarge {
                max: limits.max_total_bytes,
            });
        }
        if files.contains_key(&path) {
            return Err(ArchiveError::Duplicate { path });
        }
        // `size` is bounded by the limits checked above, so this allocation is too.
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(corrupt)?;
        if data.len() as u64 != size {
            return Err(corrupt(format!("entry `{path}` is truncated")));
        }
        files.insert(path, data);
    }
    Ok(files)
}

/// Decodes an entry path and strips one leading `./`.
fn decode_path(raw: &[u8]) -> Result<&str, ArchiveError> {
    let path = std::str::from_utf8(raw).map_err(|_| ArchiveError::InvalidPath {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: "path is not UTF-8".to_owned(),
    })?;
    Ok(path.strip_prefix("./").unwrap_or(path))
}

fn invalid(path: &str, reason: &str) -> ArchiveError {
    ArchiveError::InvalidPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn file_path(raw: &[u8]) -> Result<String, ArchiveError> {
    let path = decode_path(raw)?;
    check_relative_path(path).map_err(|reason| invalid(path, reason))?;
    Ok(path.to_owned())
}

fn directory_path(raw: &[u8]) -> Result<(), ArchiveError> {
    let path = decode_path(raw)?;
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() || trimmed == "." {
        return Ok(());
    }
    check_relative_path(trimmed).map_err(|reason| invalid(path, reason))
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::XGlobalHeader => "pax global header",
        _ => "special entry",
    }
}

/// Sorts the files into manifest, component and UI, refusing anything else.
fn assemble(mut files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, ArchiveError> {
    let manifest_json = files
        .remove(MANIFEST_PATH)
        .ok_or_else(|| ArchiveError::Missing(format!("`{MANIFEST_PATH}`")))?;
    let manifest = Manifest::from_json(&manifest_json)?;
    let component = files.remove(&manifest.component).ok_or_else(|| {
        ArchiveError::Missing(format!(
            "component `{}` (named by the manifest's `component`)",
            manifest.component
        ))
    })?;
    let ui_prefix = format!("{UI_DIR}/");
    let mut ui = BTreeMap::new();
    for (path, data) in files {
        match path.strip_prefix(&ui_prefix) {
            Some(rest) => {
                ui.insert(rest.to_owned(), data);
            }
            None => {
                return Err(ArchiveError::Unexpected {
                    path,
                    component: manifest.component,
                });
            }
        }
    }
    check_ui_entry(&manifest, ui.keys().map(String::as_str))?;
    Ok(Bundle {
        manifest,
        manifest_json,
        component,
        ui,
    })
}
