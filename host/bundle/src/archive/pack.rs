//! Reproducible packing: sorted entries, fixed metadata, fixed compression level.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use super::{ArchiveError, MANIFEST_PATH, UI_DIR, ZSTD_LEVEL, check_ui_entry};
use crate::manifest::Manifest;
use crate::paths::check_relative_path;

/// Packs a bundle. `component_name` must be the manifest's `component`; `ui` holds paths
/// relative to `ui/`. The same inputs always give the same bytes.
pub fn pack(
    manifest_json: &[u8],
    component_name: &str,
    component: &[u8],
    ui: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, ArchiveError> {
    let manifest = Manifest::from_json(manifest_json)?;
    if component_name != manifest.component {
        return Err(ArchiveError::ComponentMismatch {
            given: component_name.to_owned(),
            manifest: manifest.component,
        });
    }
    let mut entries: BTreeMap<String, &[u8]> = BTreeMap::new();
    entries.insert(MANIFEST_PATH.to_owned(), manifest_json);
    entries.insert(component_name.to_owned(), component);
    for (path, data) in ui {
        check_relative_path(path).map_err(|reason| ArchiveError::InvalidPath {
            path: format!("{UI_DIR}/{path}"),
            reason: reason.to_owned(),
        })?;
        let full = format!("{UI_DIR}/{path}");
        if entries.insert(full.clone(), data).is_some() {
            return Err(ArchiveError::Duplicate { path: full });
        }
    }
    check_ui_entry(&manifest, ui.iter().map(|(path, _)| path.as_str()))?;

    let tar = write_tar(&entries).map_err(ArchiveError::Write)?;
    compress(&tar).map_err(ArchiveError::Write)
}

/// Writes `entries` (already sorted by path) as a tar with fixed metadata.
fn write_tar(entries: &BTreeMap<String, &[u8]>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_username("")?;
        header.set_groupname("")?;
        builder.append_data(&mut header, path, *data)?;
    }
    builder.into_inner()
}

fn compress(tar: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(tar.len() as u64))?;
    encoder.write_all(tar)?;
    encoder.finish()
}

/// Packs the extension in `dir`: `dir/manifest.json` (validated), the component read from
/// `component_file` (stored at the manifest's `component` path) and every file under
/// `dir/ui/`, if that directory exists. Symbolic links are refused.
pub fn pack_dir(dir: &Path, component_file: &Path) -> Result<Vec<u8>, ArchiveError> {
    let manifest_path = dir.join(MANIFEST_PATH);
    let manifest_json = read(&manifest_path)?;
    let manifest = Manifest::from_json(&manifest_json)?;
    let component = read(component_file)?;

    let mut ui = Vec::new();
    let ui_dir = dir.join(UI_DIR);
    match fs::symlink_metadata(&ui_dir) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(ArchiveError::Symlink(ui_dir)),
        Ok(meta) if meta.is_dir() => collect_ui(&ui_dir, "", &mut ui)?,
        Ok(_) => {
            return Err(ArchiveError::InvalidPath {
                path: UI_DIR.to_owned(),
                reason: "`ui` must be a directory".to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ArchiveError::Io {
                path: ui_dir,
                source,
            });
        }
    }
    pack(&manifest_json, &manifest.component, &component, &ui)
}

fn read(path: &Path) -> Result<Vec<u8>, ArchiveError> {
    fs::read(path).map_err(|source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Adds every regular file below `dir` to `out`, with `/`-separated paths prefixed by
/// `prefix`.
fn collect_ui(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), ArchiveError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| ArchiveError::InvalidPath {
                path: path.display().to_string(),
                reason: format!("file name {name:?} is not UTF-8"),
            })?;
        let relative = format!("{prefix}{name}");
        let file_type = entry.file_type().map_err(io_err(&path))?;
        if file_type.is_symlink() {
            return Err(ArchiveError::Symlink(path));
        } else if file_type.is_dir() {
            collect_ui(&path, &format!("{relative}/"), out)?;
        } else if file_type.is_file() {
            let data = read(&path)?;
            out.push((relative, data));
        } else {
            return Err(ArchiveError::NotRegularFile {
                path: path.display().to_string(),
                kind: "special file".to_owned(),
            });
        }
    }
    Ok(())
}
