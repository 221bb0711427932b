//! Copying a whole registry into another: a single-machine platform's SQLite database and
//! objects onto PostgreSQL and a shared object store (`palisade migrate`).
//!
//! Every table is copied row by row in foreign-key order, each in one transaction on the
//! target, with each value read as the type of the target's column; then every object
//! (bundles, signatures, precompiled artifacts) is copied create-only. The target must be
//! empty, so nothing there is ever overwritten; run the copy while the source platform is
//! stopped, and point the nodes at the target afterwards.

use futures::StreamExt as _;
use object_store::{PutMode, PutOptions, PutPayload};
use sqlx::Row;

use crate::db::Backend;
use crate::{Registry, RegistryError};

/// Every table, in an order where a row's references are copied before it.
pub const TABLES: [&str; 20] = [
    "extension_registry",
    "extension_bundle",
    "extension_version",
    "tenant_extension_install",
    "extension_event_subscription",
    "extension_execution_log",
    "extension_quota_usage",
    "extension_storage",
    "extension_secret",
    "extension_storage_install",
    "extension_storage_namespace",
    "extension_signer",
    "publisher_key",
    "bundle_signature_history",
    "extension_event",
    "extension_schedule",
    "extension_event_delivery",
    "admin_credential",
    "quota_claim",
    "idempotent_answer",
];

/// Tables a copy leaves alone: the change sequence starts afresh on the target, whose
/// processes have cached nothing yet.
pub const NOT_COPIED: [&str; 2] = ["registry_change", "registry_change_seq"];

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied, per table, in copy order.
    pub rows: Vec<(&'static str, u64)>,
    /// Objects copied (those already at the target included).
    pub objects: u64,
}

/// Why a copy did not happen or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The copy goes from SQLite to PostgreSQL only.
    #[error(
        "a registry is copied from SQLite to PostgreSQL; this copy would go from {from:?} to {to:?}"
    )]
    Direction {
        /// The source's backend.
        from: Backend,
        /// The target's backend.
        to: Backend,
    },
    /// The target holds data already.
    #[error(
        "the target registry is not empty: table `{table}` has {rows} rows; copy into an \
         empty database (or a new schema)"
    )]
    TargetNotEmpty {
        /// The first table found with rows.
        table: &'static str,
        /// How many.
        rows: i64,
    },
    /// A column of the target has a type this copy does not know.
    #[error("column `{table}.{column}` of the target has the unexpected type `{data_type}`")]
    UnknownType {
        /// The table.
        table: &'static str,
        /// The column.
        column: String,
        /// Its type, as PostgreSQL names it.
        data_type: String,
    },
    /// Reading or writing a table failed.
    #[error("copying table `{table}`: {source}")]
    Table {
        /// The table.
        table: &'static str,
        /// What failed.
        #[source]
        source: sqlx::Error,
    },
    /// The registry failed otherwise (opening, objects).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A column of the target and the type its values are read and bound as.
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    BigInt,
    Integer,
    Boolean,
    Bytes,
}

impl Registry {
    /// Copies every row and object of this registry (SQLite) into `target` (PostgreSQL,
    /// migrated and empty).
    pub async fn copy_into(&self, target: &Registry) -> Result<CopyReport, CopyError> {
        let (from, to) = (self.backend(), target.backend());
        if from != Backend::Sqlite || to != Backend::Postgres {
            return Err(CopyError::Direction { from, to });
        }
        for table in TABLES {
            let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&target.pool)
                .await
                .map_err(|source| CopyError::Table { table, source })?;
            if rows > 0 {
                return Err(CopyError::TargetNotEmpty { table, rows });
            }
        }
        let mut report = CopyReport::default();
        for table in TABLES {
            let copied = self.copy_table(target, table).await?;
            tracing::info!(table, rows = copied, "table copied");
            report.rows.push((table, copied));
        }
        report.objects = self.copy_objects(target).await?;
        Ok(report)
    }

    async fn copy_table(&self, target: &Registry, table: &'static str) -> Result<u64, CopyError> {
        let failed = |source| CopyError::Table { table, source };
        let columns = target_columns(target, table).await?;
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        // The Any driver reads no SQLite BOOLEAN: those come as integers.
        let selected: Vec<String> = columns
            .iter()
            .map(|c| match c.kind {
                Kind::Boolean => format!("CAST({0} AS INTEGER) AS {0}", c.name),
                _ => c.name.clone(),
            })
            .collect();
        let select = format!("SELECT {} FROM {table}", selected.join(", "));
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            placeholders.join(", ")
        );
        let mut rows = sqlx::query(&select).fetch(&self.pool);
        let mut tx = target.pool.begin().await.map_err(failed)?;
        let mut copied = 0;
        while let Some(row) = rows.next().await {
            let row = row.map_err(failed)?;
            let mut query = sqlx::query(&insert);
            for (i, column) in columns.iter().enumerate() {
                query = match column.kind {
                    Kind::Text => query.bind(row.try_get::<Option<String>, _>(i).map_err(failed)?),
                    Kind::BigInt => query.bind(row.try_get::<Option<i64>, _>(i).map_err(failed)?),
                    Kind::Integer => {
                        let value = row.try_get::<Option<i64>, _>(i).map_err(failed)?;
                        let value = value
                            .map(i32::try_from)
                            .transpose()
                            .map_err(|e| failed(sqlx::Error::Decode(Box::new(e))))?;
                        query.bind(value)
                    }
                    Kind::Boolean => {
                        let value = row.try_get::<Option<i64>, _>(i).map_err(failed)?;
                        query.bind(value.map(|v| v != 0))
                    }
                    Kind::Bytes => {
                        query.bind(row.try_get::<Option<Vec<u8>>, _>(i).map_err(failed)?)
                    }
                };
            }
            query.execute(&mut *tx).await.map_err(failed)?;
            copied += 1;
        }
        tx.commit().await.map_err(failed)?;
        Ok(copied)
    }

    /// Copies every object (create-only) into `target`'s store.
    async fn copy_objects(&self, target: &Registry) -> Result<u64, CopyError> {
        let source = self.objects.inner();
        let sink = target.objects.inner();
        let mut listing = source.list(None);
        let mut copied = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(RegistryError::from)?;
            let bytes = source
                .get(&meta.location)
                .await
                .map_err(RegistryError::from)?
                .bytes()
                .await
                .map_err(RegistryError::from)?;
            let create = PutOptions::from(PutMode::Create);
            match sink
                .put_opts(&meta.location, PutPayload::from(bytes), create)
                .await
            {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(err) => return Err(RegistryError::from(err).into()),
            }
            copied += 1;
        }
        Ok(copied)
    }
}

/// The columns of `table` in the target (PostgreSQL), in order.
async fn target_columns(target: &Registry, table: &'static str) -> Result<Vec<Column>, CopyError> {
    let rows = sqlx::query(
        "SELECT column_name::TEXT AS name, data_type::TEXT AS data_type \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&target.pool)
    .await
    .map_err(|source| CopyError::Table { table, source })?;
    rows.into_iter()
        .map(|row| {
            let name: String = row
                .try_get("name")
                .map_err(|source| CopyError::Table { table, source })?;
            let data_type: String = row
                .try_get("data_type")
                .map_err(|source| CopyError::Table { table, source })?;
            let kind = match data_type.as_str() {
                "text" => Kind::Text,
                "bigint" => Kind::BigInt,
                "integer" => Kind::Integer,
                "boolean" => Kind::Boolean,
                "bytea" => Kind::Bytes,
                _ => {
                    return Err(CopyError::UnknownType {
                        table,
                        column: name,
                        data_type,
                    });
                }
            };
            Ok(Column { name, kind })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_copied() {
        let mut tables = TABLES.to_vec();
        tables.extend(NOT_COPIED);
        tables.sort_unstable();
        assert_eq!(tables, crate::db::tests::TABLES);
    }
}
