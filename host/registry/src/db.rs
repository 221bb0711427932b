//! Database connection pool and embedded schema migrations.
//!
//! The migrations live in `migrations/sqlite/` as plain SQL files and are compiled into
//! the binary, so a deployed registry never reads them from disk.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::RegistryError;

/// The connection pool type used by the registry.
pub type Pool = sqlx::SqlitePool;

/// How long a connection waits for a competing writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections one registry handle keeps open.
const MAX_CONNECTIONS: u32 = 8;

/// One embedded migration: version, description and SQL text.
struct EmbeddedMigration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// The SQLite schema, in order. File names follow sqlx's `<VERSION>_<DESCRIPTION>.sql`.
const SQLITE_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "storage_usage",
        sql: include_str!("../migrations/sqlite/0002_storage_usage.sql"),
    },
];

/// The migrations compiled into this crate, as a sqlx migration source.
#[derive(Debug, Clone, Copy)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(SQLITE_MIGRATIONS
                .iter()
                .map(|m| {
                    Migration::new(
                        m.version,
                        Cow::Borrowed(m.description),
                        MigrationType::Simple,
                        Cow::Borrowed(m.sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Opens (creating the file and its directory if missing) the database at `database_url`.
///
/// Only `sqlite:` URLs are supported. Every connection runs with WAL journaling, foreign
/// keys enforced and a busy timeout.
pub async fn connect(database_url: &str) -> Result<Pool, RegistryError> {
    if !database_url.starts_with("sqlite:") {
        return Err(RegistryError::UnsupportedDatabase {
            url: redact_url(database_url),
        });
    }
    let options = SqliteConnectOptions::from_str(database_url)
        .map_err(|source| RegistryError::InvalidDatabaseUrl {
            url: redact_url(database_url),
            source,
        })?
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);

    if let Some(dir) = database_dir(options.get_filename()) {
        std::fs::create_dir_all(&dir).map_err(|source| RegistryError::Io {
            path: dir.clone(),
            source,
        })?;
    }

    SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .map_err(RegistryError::from)
}

/// Applies every embedded migration that `pool` has not seen yet.
pub async fn migrate(pool: &Pool) -> Result<(), RegistryError> {
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(pool).await?;
    Ok(())
}

/// The directory a database file lives in, if it is a real file with a parent.
fn database_dir(filename: &Path) -> Option<PathBuf> {
    let text = filename.to_string_lossy();
    if text.is_empty() || text.starts_with("file:") || text == ":memory:" {
        return None;
    }
    filename
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// `url` with any password replaced, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `err` is a unique-constraint violation (a row with the same key exists).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = SQLITE_MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description))
            .collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://user:secret@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }

    #[tokio::test]
    async fn connect_creates_the_file_and_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/registry.db");
        let pool = connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        migrate(&pool).await.unwrap();
        // Running the migrations twice is a no-op.
        migrate(&pool).await.unwrap();
        assert!(path.exists());

        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            tables,
            [
                "extension_bundle",
                "extension_event_subscription",
                "extension_execution_log",
                "extension_quota_usage",
                "extension_registry",
                "extension_secret",
                "extension_storage",
                "extension_storage_install",
                "extension_storage_namespace",
                "extension_version",
                "tenant_extension_install",
            ]
        );
    }

    #[tokio::test]
    async fn other_databases_are_refused_by_name() {
        let err = connect("postgres://u:pw@localhost/db").await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("postgres://***@localhost/db"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
