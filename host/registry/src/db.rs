//! Database connection pool and embedded schema migrations, for both backends.
//!
//! The registry speaks to SQLite (`sqlite:` URLs, the embedded default) and PostgreSQL
//! (`postgres://` or `postgresql://` URLs) through one pool type. Every query in this crate
//! is written once, in the SQL both accept (`$N` parameters, `ON CONFLICT` upserts,
//! `RETURNING`), and reads only types both drivers map the same way (text, 64-bit
//! integers, bytes; flags are read back as integers).
//!
//! The migrations live in `migrations/<backend>/` as plain SQL files with the same
//! versions for both backends, and are compiled into the binary, so a deployed registry
//! never reads them from disk.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;

use crate::error::RegistryError;

/// The connection pool type used by the registry (either backend).
pub type Pool = sqlx::AnyPool;

/// One connection of [`Pool`].
pub type Connection = sqlx::AnyConnection;

/// One row read through [`Pool`].
pub type Row = sqlx::any::AnyRow;

/// A transaction on [`Pool`].
pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// How long a SQLite connection waits for a competing writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings every SQLite connection starts with: WAL journaling, foreign keys enforced
/// and a busy timeout.
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; \
                              PRAGMA journal_mode = WAL; \
                              PRAGMA synchronous = NORMAL;";

/// Most connections one registry handle keeps open.
const MAX_CONNECTIONS: u32 = 8;
/// Longest wait for a pooled connection on a call's path: a database that does not answer
/// fails the operation (and so the call, 503) within this time instead of holding it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening the registry keeps trying to reach a database that does not answer
/// (a server still starting).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The database behind a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite:` URLs).
    Sqlite,
    /// A PostgreSQL server (`postgres://` or `postgresql://` URLs).
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Self, RegistryError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(RegistryError::UnsupportedDatabase {
                url: redact_url(url),
            })
        }
    }

    /// The backend `pool` is connected to.
    pub fn of_pool(pool: &Pool) -> Self {
        match pool.connect_options().database_url.scheme() {
            "sqlite" => Self::Sqlite,
            _ => Self::Postgres,
        }
    }

    fn migrations(self) -> &'static [EmbeddedMigration] {
        match self {
            Self::Sqlite => SQLITE_MIGRATIONS,
            Self::Postgres => POSTGRES_MIGRATIONS,
        }
    }
}

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
    EmbeddedMigration {
        version: 3,
        description: "publisher_trust",
        sql: include_str!("../migrations/sqlite/0003_publisher_trust.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "execution_response_bytes",
        sql: include_str!("../migrations/sqlite/0004_execution_response_bytes.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "events",
        sql: include_str!("../migrations/sqlite/0005_events.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "event_retention",
        sql: include_str!("../migrations/sqlite/0006_event_retention.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "execution_user_trace",
        sql: include_str!("../migrations/sqlite/0007_execution_user_trace.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "quota_claims",
        sql: include_str!("../migrations/sqlite/0008_quota_claims.sql"),
    },
    EmbeddedMigration {
        version: 9,
        description: "idempotency",
        sql: include_str!("../migrations/sqlite/0009_idempotency.sql"),
    },
    EmbeddedMigration {
        version: 10,
        description: "change_sequence",
        sql: include_str!("../migrations/sqlite/0010_change_sequence.sql"),
    },
];

/// The PostgreSQL schema: the same versions as [`SQLITE_MIGRATIONS`].
const POSTGRES_MIGRATIONS: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    EmbeddedMigration {
        version: 2,
        description: "storage_usage",
        sql: include_str!("../migrations/postgres/0002_storage_usage.sql"),
    },
    EmbeddedMigration {
        version: 3,
        description: "publisher_trust",
        sql: include_str!("../migrations/postgres/0003_publisher_trust.sql"),
    },
    EmbeddedMigration {
        version: 4,
        description: "execution_response_bytes",
        sql: include_str!("../migrations/postgres/0004_execution_response_bytes.sql"),
    },
    EmbeddedMigration {
        version: 5,
        description: "events",
        sql: include_str!("../migrations/postgres/0005_events.sql"),
    },
    EmbeddedMigration {
        version: 6,
        description: "event_retention",
        sql: include_str!("../migrations/postgres/0006_event_retention.sql"),
    },
    EmbeddedMigration {
        version: 7,
        description: "execution_user_trace",
        sql: include_str!("../migrations/postgres/0007_execution_user_trace.sql"),
    },
    EmbeddedMigration {
        version: 8,
        description: "quota_claims",
        sql: include_str!("../migrations/postgres/0008_quota_claims.sql"),
    },
    EmbeddedMigration {
        version: 9,
        description: "idempotency",
        sql: include_str!("../migrations/postgres/0009_idempotency.sql"),
    },
    EmbeddedMigration {
        version: 10,
        description: "change_sequence",
        sql: include_str!("../migrations/postgres/0010_change_sequence.sql"),
    },
];

/// The migrations compiled into this crate for one backend, as a sqlx migration source.
#[derive(Debug, Clone, Copy)]
struct Embedded(Backend);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .migrations()
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

/// Connects to the database at `database_url`.
///
/// A SQLite file and its directory are created if missing; every SQLite connection runs
/// with WAL journaling, foreign keys enforced and a busy timeout. On PostgreSQL, the first
/// schema of the URL's `search_path` (e.g. `?options=-c%20search_path%3Dpalisade`) is
/// created if missing, so that one server can hold several registries.
pub async fn connect(database_url: &str) -> Result<Pool, RegistryError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(database_url)?;
    let url = match backend {
        Backend::Sqlite => sqlite_url(database_url)?,
        Backend::Postgres => database_url.to_owned(),
    };
    let options = AnyPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    conn.execute(
                        format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis()).as_str(),
                    )
                    .await?;
                }
                Ok(())
            })
        });
    // The first connection is retried (each attempt within the acquire timeout) while the
    // server may still be starting.
    let started = std::time::Instant::now();
    let pool = loop {
        match options.clone().connect(&url).await {
            Ok(pool) => break pool,
            Err(source @ (sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)))
                if started.elapsed() < OPEN_TIMEOUT =>
            {
                tracing::debug!(error = %source, "the registry database does not answer yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(source) => {
                return Err(RegistryError::Connect {
                    url: redact_url(database_url),
                    source,
                });
            }
        }
    };
    if backend == Backend::Postgres {
        create_search_path_schema(&pool).await?;
    }
    Ok(pool)
}

/// Checks a SQLite URL, creates the directory of its file and asks the driver to create
/// the file if missing.
fn sqlite_url(database_url: &str) -> Result<String, RegistryError> {
    let options = SqliteConnectOptions::from_str(database_url).map_err(|source| {
        RegistryError::InvalidDatabaseUrl {
            url: redact_url(database_url),
            source,
        }
    })?;
    if let Some(dir) = database_dir(options.get_filename()) {
        std::fs::create_dir_all(&dir).map_err(|source| RegistryError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    if database_url.contains("mode=") {
        return Ok(database_url.to_owned());
    }
    let separator = if database_url.contains('?') { '&' } else { '?' };
    Ok(format!("{database_url}{separator}mode=rwc"))
}

/// Creates the first schema of the connection's `search_path` when it does not exist yet
/// (PostgreSQL then has no current schema).
async fn create_search_path_schema(pool: &Pool) -> Result<(), RegistryError> {
    let current: Option<String> = sqlx::query_scalar("SELECT current_schema()::TEXT")
        .fetch_one(pool)
        .await?;
    if current.is_some() {
        return Ok(());
    }
    let search_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(pool)
        .await?;
    let first = search_path
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .find(|s| !s.is_empty() && *s != "$user")
        .unwrap_or_default();
    let valid = !first.is_empty()
        && first.len() <= 63
        && first
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(RegistryError::InvalidSchema {
            search_path: search_path.clone(),
        });
    }
    pool.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{first}\"").as_str())
        .await?;
    Ok(())
}

/// Applies every embedded migration that `pool` has not seen yet.
pub async fn migrate(pool: &Pool) -> Result<(), RegistryError> {
    let migrator = Migrator::new(Embedded(Backend::of_pool(pool))).await?;
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
pub fn now_millis() -> i64 {
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
pub(crate) mod tests {
    use super::*;

    /// The registry's tables, on either backend.
    pub(crate) const TABLES: [&str; 22] = [
        "admin_credential",
        "bundle_signature_history",
        "extension_bundle",
        "extension_event",
        "extension_event_delivery",
        "extension_event_subscription",
        "extension_execution_log",
        "extension_quota_usage",
        "extension_registry",
        "extension_schedule",
        "extension_secret",
        "extension_signer",
        "extension_storage",
        "extension_storage_install",
        "extension_storage_namespace",
        "extension_version",
        "idempotent_answer",
        "publisher_key",
        "quota_claim",
        "registry_change",
        "registry_change_seq",
        "tenant_extension_install",
    ];

    #[test]
    fn every_migration_file_is_embedded_for_both_backends() {
        for (dir, migrations) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            on_disk.sort();
            let embedded: Vec<String> = migrations
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.description))
                .collect();
            assert_eq!(on_disk, embedded, "{}", dir.display());
        }
        let versions = |m: &[EmbeddedMigration]| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE_MIGRATIONS), versions(POSTGRES_MIGRATIONS));
    }

    #[test]
    fn backends_are_named_by_the_url_scheme() {
        assert_eq!(Backend::of_url("sqlite://a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgres://h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::of_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://h/db").is_err());
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
        assert_eq!(tables, TABLES);
    }

    #[tokio::test]
    async fn other_databases_are_refused_by_name() {
        let err = connect("mysql://u:pw@localhost/db").await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mysql://***@localhost/db"), "{text}");
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    /// A server that refuses the connection is named in the error, without the password.
    /// (Refused, not unreachable: the pool retries an unreachable server until its acquire
    /// timeout.)
    #[tokio::test]
    async fn a_refused_connection_is_named_without_its_password() {
        let Some(server) = crate::testing::postgres_url_or_skip() else {
            return;
        };
        let at = server.rfind('@').map_or(server.len(), |at| at + 1);
        let end = server[at..].find('/').map_or(server.len(), |i| at + i);
        let url = format!("postgres://no_such_role:pw@{}/db", &server[at..end]);
        let err = connect(&url).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RegistryError::Connect { .. }), "{text}");
        assert!(text.contains("postgres://***@"), "{text}");
        assert!(text.contains("no_such_role"), "{text}");
        assert!(!text.contains(":pw"), "{text}");
    }

    /// On PostgreSQL (when the tests are given a server): the schema named by the URL is
    /// created, migrated twice without harm, and holds the same tables as SQLite.
    #[tokio::test]
    async fn postgres_schema_is_created_and_migrated() {
        let Some(server) = crate::testing::postgres_url_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let url = crate::testing::database_url(dir.path());
        assert!(url.starts_with(&server), "{url}");
        let pool = connect(&url).await.unwrap();
        assert_eq!(Backend::of_pool(&pool), Backend::Postgres);
        migrate(&pool).await.unwrap();
        migrate(&pool).await.unwrap();
        let schema: String = sqlx::query_scalar("SELECT current_schema()::TEXT")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(schema.starts_with("palisade_t_"), "{schema}");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::TEXT FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%' \
             ORDER BY table_name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(tables, TABLES);
    }

    #[tokio::test]
    async fn a_schema_name_that_cannot_be_created_is_refused() {
        let Some(server) = crate::testing::postgres_url_or_skip() else {
            return;
        };
        let url = crate::testing::postgres_schema_url(&server, "BadName");
        let err = connect(&url).await.unwrap_err();
        assert!(matches!(err, RegistryError::InvalidSchema { .. }), "{err}");
    }
}
