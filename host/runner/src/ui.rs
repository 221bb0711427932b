//! Extension UIs: `GET` and `HEAD` on `/ext-ui/{extension_id}/{content_hash}/{*path}` serve
//! the `ui/` tree of the published version whose bundle has that content hash, to be shown
//! in a sandboxed iframe of the host application.
//!
//! * **Which tree.** The content hash must be a well-formed hash of a version of that
//!   extension; otherwise, and for any path that names nothing, the answer is 404.
//! * **Paths** are checked on the raw URI, before and after percent-decoding: no `.` or
//!   `..` segment (encoded ones included), no encoded `/` or `\`, no backslash, no NUL, no
//!   hidden file (a segment starting with `.`), no empty segment. A path ending in `/`
//!   serves that directory's `index.html` only when the manifest sets
//!   `ui.directory_index`; a path naming no file serves the entry document when it sets
//!   `ui.spa_fallback`.
//! * **Headers.** `content-type` from the file extension; a strong `ETag` (the file's
//!   SHA-256) with `304` for `if-none-match`; `cache-control: public, max-age=31536000,
//!   immutable` (every URL names its content hash), `no-cache` on an SPA fallback;
//!   `x-content-type-options: nosniff`, `referrer-policy: no-referrer`,
//!   `access-control-allow-origin: *` (module scripts of an opaque-origin document are
//!   fetched in CORS mode); on HTML a
//!   `content-security-policy` whose `frame-ancestors` are the operator's host origins and
//!   whose `connect-src` is `'none'` (the UI talks to its API only through the bridge).
//!   Single byte ranges are served (`206`, `416` when unsatisfiable).
//! * **Cache.** A tree is unpacked once per content hash into the operator's cache
//!   directory, from a bundle re-hashed and signature-verified first, with the SHA-256 of
//!   every file in an index beside it. Every file served is hashed again: a file changed
//!   on disk drops the tree, which is unpacked again from the bundle. The trees on disk
//!   are bounded in total bytes, least recently used first out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use lru::LruCache;
use palisade_bundle::archive::{UnpackLimits, unpack};
use palisade_bundle::hash::ContentHash;
use palisade_bundle::manifest::Ui;
use palisade_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RunnerState;
use crate::error::{Integrity, RunnerError};

/// The route's prefix.
pub(crate) const UI_PREFIX: &str = "/ext-ui";

/// Operator settings of UI serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// Where unpacked UI trees are kept, one directory per content hash.
    pub cache_dir: PathBuf,
    /// Bytes of unpacked trees kept on disk; the least recently used trees go first.
    pub cache_bytes: u64,
    /// Largest single file served, in bytes; larger files are not found.
    pub max_file_bytes: u64,
    /// Origins of the host application allowed to frame the UIs (`frame-ancestors`);
    /// empty: none may.
    pub frame_ancestors: Vec<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            cache_dir: std::env::temp_dir().join("palisade-ui-cache"),
            cache_bytes: 256 * 1024 * 1024,
            max_file_bytes: 8 * 1024 * 1024,
            frame_ancestors: Vec::new(),
        }
    }
}

/// Why a UI request was not served.
#[derive(Debug, thiserror::Error)]
enum UiError {
    /// No such tree or file, or a path that is refused (the answer does not say which).
    #[error("not found: {0}")]
    NotFound(String),
    /// Reading or verifying the bundle failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The cache directory could not be written or read.
    #[error("UI cache: {0}")]
    Cache(#[from] std::io::Error),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let code = match &self {
            UiError::NotFound(_) => ErrorCode::NotFound,
            UiError::Runner(error) => error.code(),
            UiError::Cache(_) => ErrorCode::Internal,
        };
        match code {
            ErrorCode::NotFound => tracing::debug!(error = %self, "UI request refused"),
            _ => tracing::error!(error = %self, "UI request failed"),
        }
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(serde_json::json!({ "error": code }))).into_response()
    }
}

/// One file of a tree: its size and SHA-256 (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    len: u64,
    sha256: String,
}

/// The files of one unpacked tree, by path below `ui/`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TreeIndex {
    files: BTreeMap<String, FileEntry>,
}

impl TreeIndex {
    fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.len).sum()
    }
}

/// The unpacked trees on disk, least recently used first out.
#[derive(Debug)]
pub(crate) struct UiTrees {
    config: UiConfig,
    trees: Mutex<LruCache<ContentHash, Arc<TreeIndex>>>,
    bytes: AtomicU64,
    next_temp: AtomicU64,
}

impl UiTrees {
    pub(crate) fn new(config: UiConfig) -> Self {
        UiTrees {
            config,
            trees: Mutex::new(LruCache::unbounded()),
            bytes: AtomicU64::new(0),
            next_temp: AtomicU64::new(0),
        }
    }

    fn dir(&self, hash: &ContentHash) -> PathBuf {
        self.config.cache_dir.join(hash_dir(hash))
    }

    fn remember(&self, hash: ContentHash, index: Arc<TreeIndex>) {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        if trees.put(hash, Arc::clone(&index)).is_none() {
            self.bytes.fetch_add(index.bytes(), Ordering::Relaxed);
        }
        // Past the bound, the least recently used trees leave the disk (never the one
        // just added).
        while self.bytes.load(Ordering::Relaxed) > self.config.cache_bytes && trees.len() > 1 {
            let Some((old, index)) = trees.pop_lru() else {
                break;
            };
            self.bytes.fetch_sub(index.bytes(), Ordering::Relaxed);
            let dir = self.dir(&old);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing an evicted UI tree");
            }
        }
    }

    /// Forgets the tree of `hash` and removes it from the disk.
    fn drop_tree(&self, hash: &ContentHash) {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = trees.pop(hash) {
            self.bytes.fetch_sub(index.bytes(), Ordering::Relaxed);
        }
        let _ = std::fs::remove_dir_all(self.dir(hash));
    }

    fn cached(&self, hash: &ContentHash) -> Option<Arc<TreeIndex>> {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        trees.get(hash).cloned()
    }
}

/// The cache directory's name for `hash`.
fn hash_dir(hash: &ContentHash) -> String {
    hash.to_string().replace(':', "-")
}

impl RunnerState {
    /// The index of the unpacked tree of `hash`: remembered, read from the cache directory
    /// (a tree unpacked by an earlier process), or unpacked from the verified bundle.
    async fn ui_tree(&self, hash: &ContentHash) -> Result<Arc<TreeIndex>, UiError> {
        if let Some(index) = self.ui.cached(hash) {
            return Ok(index);
        }
        let dir = self.ui.dir(hash);
        if let Ok(text) = tokio::fs::read(dir.join("index.json")).await
            && let Ok(index) = serde_json::from_slice::<TreeIndex>(&text)
        {
            let index = Arc::new(index);
            self.ui.remember(*hash, Arc::clone(&index));
            return Ok(index);
        }
        let trust = self.registry.trust_set().await.map_err(RunnerError::from)?;
        let bytes = self.verified_bundle(hash, &trust).await?;
        let temp = self.ui.config.cache_dir.join(format!(
            ".tmp-{}-{}-{}",
            hash_dir(hash),
            std::process::id(),
            self.ui.next_temp.fetch_add(1, Ordering::Relaxed)
        ));
        let hash_copy = *hash;
        let index =
            tokio::task::spawn_blocking(move || unpack_tree(&hash_copy, &bytes, &temp, &dir))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        let index = Arc::new(index);
        self.ui.remember(*hash, Arc::clone(&index));
        Ok(index)
    }
}

/// Unpacks the `ui/` tree of the verified bundle `bytes` into `temp` with its index, then
/// moves it to `dir` (where another request may have put the same tree first).
fn unpack_tree(
    hash: &ContentHash,
    bytes: &[u8],
    temp: &Path,
    dir: &Path,
) -> Result<TreeIndex, UiError> {
    let bundle =
        unpack(bytes, &UnpackLimits::default()).map_err(|e| RunnerError::BundleIntegrity {
            hash: *hash,
            problem: Integrity::Unpack(Arc::new(e)),
        })?;
    let mut index = TreeIndex::default();
    for (path, content) in &bundle.ui {
        let file = temp.join("ui").join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, content)?;
        index.files.insert(
            path.clone(),
            FileEntry {
                len: content.len() as u64,
                sha256: hex::encode(Sha256::digest(content)),
            },
        );
    }
    std::fs::create_dir_all(temp)?;
    let json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
    std::fs::write(temp.join("index.json"), json)?;
    if std::fs::rename(temp, dir).is_err() {
        // Another request moved the same tree there first (or a stale one is in the way):
        // keep a whole tree either way.
        let _ = std::fs::remove_dir_all(dir);
        if let Err(e) = std::fs::rename(temp, dir) {
            let _ = std::fs::remove_dir_all(temp);
            return Err(e.into());
        }
    }
    Ok(index)
}

/// What a request asks for, once its path is checked.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    extension_id: String,
    hash: ContentHash,
    /// The file's path below `ui/`; ends in `/` (or is empty) for a directory.
    path: String,
}

/// Checks the raw path of a UI request (see the module docs); `None` refuses it.
fn parse_path(raw: &str) -> Option<Asked> {
    let rest = raw.strip_prefix(UI_PREFIX)?.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let extension_id = decode(parts.next()?)?;
    let hash = decode(parts.next()?)?.parse::<ContentHash>().ok()?;
    let tail = parts.next()?;
    let segments: Vec<&str> = tail.split('/').collect();
    let mut path = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if segment.is_empty() {
            // Only a final empty segment: a trailing slash, or the root.
            if last {
                break;
            }
            return None;
        }
        let lower = segment.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
            return None;
        }
        let decoded = decode(segment)?;
        if decoded.starts_with('.')
            || decoded.contains(['/', '\\', '\0'])
            || decoded.chars().any(char::is_control)
        {
            return None;
        }
        path.push(decoded);
    }
    let mut path = path.join("/");
    // A directory keeps its trailing slash (the root is the empty path).
    if tail.ends_with('/') && !path.is_empty() {
        path.push('/');
    }
    Some(Asked {
        extension_id,
        hash,
        path,
    })
}

/// Percent-decodes one segment; `None` when it is not UTF-8.
fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `GET`/`HEAD /ext-ui/...`.
pub(crate) async fn serve(State(state): State<Arc<RunnerState>>, request: Request) -> Response {
    match answer(&state, request.uri().path(), request.headers()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &RunnerState, raw: &str, headers: &HeaderMap) -> Result<Response, UiError> {
    let asked = parse_path(raw).ok_or_else(|| UiError::NotFound(format!("path {raw}")))?;
    let manifest = state
        .registry
        .version_manifest(&asked.extension_id, &asked.hash)
        .await
        .map_err(RunnerError::from)?
        .ok_or_else(|| UiError::NotFound(format!("{} {}", asked.extension_id, asked.hash)))?;
    let ui = manifest
        .ui
        .ok_or_else(|| UiError::NotFound(format!("{} has no UI", asked.extension_id)))?;
    let index = state.ui_tree(&asked.hash).await?;
    let Some((path, fallback)) = choose(&index, &ui, &asked.path, state.ui.config.max_file_bytes)
    else {
        return Err(UiError::NotFound(format!(
            "{} in {}",
            asked.path, asked.hash
        )));
    };
    let Some(entry) = index.files.get(&path).cloned() else {
        return Err(UiError::NotFound(path));
    };
    let content = match read_checked(&state.ui.dir(&asked.hash), &path, &entry).await {
        Some(content) => content,
        None => {
            // Changed on disk: unpack the tree again from the bundle, once.
            tracing::warn!(hash = %asked.hash, path, "a cached UI file does not match its digest; unpacking again");
            state.ui.drop_tree(&asked.hash);
            let index = state.ui_tree(&asked.hash).await?;
            let entry = index
                .files
                .get(&path)
                .cloned()
                .ok_or_else(|| UiError::NotFound(path.clone()))?;
            read_checked(&state.ui.dir(&asked.hash), &path, &entry)
                .await
                .ok_or_else(|| {
                    UiError::Cache(std::io::Error::other(format!(
                        "{path} of {} does not match its digest after unpacking again",
                        asked.hash
                    )))
                })?
        }
    };
    Ok(respond(
        &path,
        &entry,
        content,
        fallback,
        headers,
        &state.ui.config.frame_ancestors,
    ))
}

/// The file that serves `asked`, and whether it is the SPA fallback.
fn choose(index: &TreeIndex, ui: &Ui, asked: &str, max_file_bytes: u64) -> Option<(String, bool)> {
    let servable = |path: &str| {
        index
            .files
            .get(path)
            .is_some_and(|entry| entry.len <= max_file_bytes)
    };
    let path = if asked.is_empty() || asked.ends_with('/') {
        if !ui.directory_index {
            return fallback(ui, &servable);
        }
        format!("{asked}index.html")
    } else {
        asked.to_owned()
    };
    if servable(&path) {
        Some((path, false))
    } else {
        fallback(ui, &servable)
    }
}

fn fallback(ui: &Ui, servable: &dyn Fn(&str) -> bool) -> Option<(String, bool)> {
    (ui.spa_fallback && servable(&ui.entry)).then(|| (ui.entry.clone(), true))
}

/// The file's bytes, when they are what its index says.
async fn read_checked(dir: &Path, path: &str, entry: &FileEntry) -> Option<Bytes> {
    let content = tokio::fs::read(dir.join("ui").join(path)).await.ok()?;
    (content.len() as u64 == entry.len && hex::encode(Sha256::digest(&content)) == entry.sha256)
        .then(|| Bytes::from(content))
}

/// The answer for a file (see the module docs for the headers).
fn respond(
    path: &str,
    entry: &FileEntry,
    content: Bytes,
    fallback: bool,
    request: &HeaderMap,
    frame_ancestors: &[String],
) -> Response {
    let etag = format!("\"{}\"", entry.sha256);
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let html = mime.essence_str() == "text/html";
    let content_type = if mime.type_() == mime_guess::mime::TEXT
        || mime.essence_str() == "application/javascript"
    {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    };
    let set = |headers: &mut HeaderMap, name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(headers, header::CONTENT_TYPE, &content_type);
    set(headers, header::ETAG, &etag);
    set(
        headers,
        header::CACHE_CONTROL,
        if fallback {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        },
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::ACCEPT_RANGES, "bytes");
    // The UI's iframe has an opaque origin (no `allow-same-origin`), and browsers fetch its
    // module scripts in CORS mode: public, immutable assets may be read from any origin.
    set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    if html {
        set(
            headers,
            header::CONTENT_SECURITY_POLICY,
            &csp(frame_ancestors),
        );
    }
    if matches_etag(request, &etag) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let len = content.len() as u64;
    match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => match byte_range(range, len) {
            Some(Some((start, end))) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let headers = response.headers_mut();
                set(
                    headers,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{end}/{len}"),
                );
                *response.body_mut() = Body::from(content.slice(start as usize..=end as usize));
            }
            Some(None) => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                set(
                    response.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes */{len}"),
                );
            }
            // Several ranges, or a unit other than bytes: the whole file.
            None => *response.body_mut() = Body::from(content),
        },
        None => *response.body_mut() = Body::from(content),
    }
    response
}

/// The content security policy of a UI document: everything from its own origin, no
/// network access of its own, framed only by the host application's origins.
fn csp(frame_ancestors: &[String]) -> String {
    let ancestors = if frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        frame_ancestors.join(" ")
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self'; connect-src 'none'; object-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    )
}

/// Whether `if-none-match` names `etag` (or `*`).
fn matches_etag(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// One byte range of a `len`-byte file: `Some(Some((first, last)))` to serve,
/// `Some(None)` when unsatisfiable, `None` when not a single byte range (the whole file is
/// served).
fn byte_range(header: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.is_empty(), end.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => {
            let n: u64 = end.parse().ok()?;
            (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
        }
        (false, _) => {
            let first: u64 = start.parse().ok()?;
            let last = if end.is_empty() {
                len.saturating_sub(1)
            } else {
                end.parse::<u64>().ok()?.min(len.saturating_sub(1))
            };
            (first < len && first <= last).then_some((first, last))
        }
        (true, true) => return None,
    };
    Some(range)
}

#[cfg(test)]
mod tests;
