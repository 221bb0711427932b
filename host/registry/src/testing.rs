//! Test support shared with other crates' tests (feature `testing`): where a test's
//! registry lives, and opening it.
//!
//! Tests run on a SQLite file in their temporary directory. With
//! `PALISADE_TEST_POSTGRES_URL` set (e.g. `postgres://postgres@127.0.0.1:5432/palisade_ci`),
//! they run on that PostgreSQL server instead, each directory in a schema of its own, so
//! the same suite covers both backends.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Registry, RegistryConfig};

/// The variable naming the PostgreSQL server tests run against.
pub const POSTGRES_URL_VAR: &str = "PALISADE_TEST_POSTGRES_URL";

/// The PostgreSQL server tests run against, if one is named.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

/// [`postgres_url`], saying on stderr that the calling test is skipped when there is none.
pub fn postgres_url_or_skip() -> Option<String> {
    let url = postgres_url();
    if url.is_none() {
        eprintln!("skipped: {POSTGRES_URL_VAR} is not set");
    }
    url
}

/// The configuration of the registry kept in `dir` (its objects in `dir/objects`).
pub fn config(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        database_url: database_url(dir),
        object_store_dir: dir.join("objects"),
    }
}

/// Opens (creating it the first time) the registry kept in `dir`, on SQLite or on the
/// PostgreSQL server of [`POSTGRES_URL_VAR`].
///
/// # Panics
///
/// When the registry cannot be opened: a test cannot go on without it.
pub async fn open(dir: &Path) -> Registry {
    match Registry::open(&config(dir)).await {
        Ok(registry) => registry,
        Err(e) => panic!("opening the test registry in {}: {e}", dir.display()),
    }
}

/// The database URL of the registry kept for `dir`: the same URL for the same directory,
/// so a test can reopen it.
pub fn database_url(dir: &Path) -> String {
    match postgres_url() {
        Some(server) => postgres_schema_url(&server, &schema_name(dir)),
        None => format!("sqlite://{}", dir.join("registry.db").display()),
    }
}

/// `server` with its `search_path` set to `schema`.
pub fn postgres_schema_url(server: &str, schema: &str) -> String {
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-c%20search_path%3D{schema}")
}

/// A schema name for `dir`: `palisade_t_` and a digest of its path.
fn schema_name(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("palisade_t_{}", &hex::encode(digest)[..16])
}
