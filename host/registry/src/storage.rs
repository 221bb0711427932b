//! Extension storage: key/value entries per install and namespace, with revisions,
//! conditional writes, quotas and keyset paging.
//!
//! Every query is scoped by `install_id = $1 AND namespace = $2`, so one install can never
//! reach another's rows. Writes run in one transaction that first updates the install's
//! row in `extension_storage_install` (taking the write lock in SQLite, a row lock in
//! PostgreSQL), then checks the condition and the quota, then writes and commits: a write
//! that is refused leaves the store unchanged, and a write that returns is committed.
//!
//! Revisions come from a counter per install, so they are unique within an install and
//! grow with every write; a key that is deleted and written again gets a new, higher
//! revision. Sizes count the key's UTF-8 bytes plus the value's bytes.
//!
//! Writes of one install take the install's [lane](lanes) before anything shared (the
//! process's write turn on SQLite, a pooled connection on PostgreSQL), so a flood of one
//! install's writes queues behind itself and other installs' writes pass it by.

use crate::db::Row as DbRow;
use sqlx::Row;

use crate::Registry;
use crate::db::now_millis;
use crate::error::RegistryError;

/// The table whose rows this module reads, for error messages.
const TABLE: &str = "extension_storage";

/// The precondition of a write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteCondition {
    /// Whatever is there.
    Any,
    /// Only if the key does not exist.
    MustNotExist,
    /// Only if the key exists with exactly this revision.
    MustEqualRevision(u64),
}

impl WriteCondition {
    /// Whether the condition holds for a key whose current revision is `current`.
    fn holds(self, current: Option<u64>) -> bool {
        match self {
            WriteCondition::Any => true,
            WriteCondition::MustNotExist => current.is_none(),
            WriteCondition::MustEqualRevision(expected) => current == Some(expected),
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEntry {
    /// The key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of this value.
    pub revision: u64,
}

/// One page of a listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePage {
    /// The entries, at most the requested limit.
    pub entries: Vec<StorageEntry>,
    /// Whether more entries with the prefix follow the last one.
    pub more: bool,
}

/// The bounds a write must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageQuota {
    /// Most keys one namespace of an install may hold.
    pub max_keys_per_namespace: u64,
    /// Most bytes (keys plus values) one install may hold across its namespaces.
    pub max_bytes: u64,
}

/// What an install stores, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageUsage {
    /// Bytes (keys plus values) across every namespace.
    pub bytes: u64,
    /// Per namespace, in name order; namespaces that never held a key are absent.
    pub namespaces: Vec<NamespaceUsage>,
}

/// What one namespace of an install stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceUsage {
    /// The namespace.
    pub namespace: String,
    /// Keys in it.
    pub keys: u64,
    /// Bytes (keys plus values) in it.
    pub bytes: u64,
}

/// Which quota a write would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// The namespace already holds the most keys allowed.
    #[error("namespace `{namespace}` already holds {limit} keys, the most allowed")]
    Keys {
        /// The namespace.
        namespace: String,
        /// The limit.
        limit: u64,
    },
    /// The install's bytes would exceed the limit.
    #[error("the install would hold {needed} bytes, more than its limit of {limit}")]
    Bytes {
        /// The bytes the install would hold after the write.
        needed: u64,
        /// The limit.
        limit: u64,
    },
}

/// Why a write or delete did not happen. The store is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum StorageWriteError {
    /// The write condition does not hold.
    #[error("storage write condition failed: the key's current revision is {current:?}")]
    Conflict {
        /// The key's current revision, `None` if it does not exist.
        current: Option<u64>,
    },
    /// The write would exceed a quota.
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(#[from] QuotaExceeded),
    /// The database failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for StorageWriteError {
    fn from(err: sqlx::Error) -> Self {
        Self::Registry(err.into())
    }
}

/// The current state of one key inside a write transaction.
#[derive(Debug, Clone, Copy)]
struct Current {
    revision: u64,
    value_bytes: u64,
}

use crate::db::Tx;

pub(crate) mod lanes;

impl Registry {
    /// Reads one key of `namespace` of `install_id`.
    pub async fn storage_get(
        &self,
        install_id: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StorageEntry>, RegistryError> {
        let _timer = self.queries.time("storage_get");
        let row = sqlx::query(
            "SELECT key, value, revision FROM extension_storage \
             WHERE install_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(install_id)
        .bind(namespace)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| entry(&row, install_id)).transpose()
    }

    /// Writes one key if `condition` holds and `quota` allows it; returns the new
    /// revision. Committed before it returns.
    pub async fn storage_set(
        &self,
        install_id: &str,
        namespace: &str,
        key: &str,
        value: &[u8],
        condition: WriteCondition,
        quota: &StorageQuota,
    ) -> Result<u64, StorageWriteError> {
        let _timer = self.queries.time("storage_set");
        let _lane = self.lanes.enter(install_id).await;
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let (revision, install_bytes) = lock_install(&mut tx, install_id, 1).await?;
        let current = current(&mut tx, install_id, namespace, key).await?;
        if !condition.holds(current.map(|c| c.revision)) {
            return Err(StorageWriteError::Conflict {
                current: current.map(|c| c.revision),
            });
        }

        let key_bytes = len_u64(key.len());
        let new_size = key_bytes.saturating_add(len_u64(value.len()));
        let old_size = current.map_or(0, |c| key_bytes.saturating_add(c.value_bytes));
        let new_total = install_bytes
            .saturating_sub(old_size)
            .saturating_add(new_size);
        // A write that does not grow the install is allowed even over the limit (after an
        // operator lowered it), so data can always be shrunk.
        if new_size > old_size && new_total > quota.max_bytes {
            return Err(QuotaExceeded::Bytes {
                needed: new_total,
                limit: quota.max_bytes,
            }
            .into());
        }
        if current.is_none() {
            let keys = namespace_keys(&mut tx, install_id, namespace).await?;
            if keys >= quota.max_keys_per_namespace {
                return Err(QuotaExceeded::Keys {
                    namespace: namespace.to_owned(),
                    limit: quota.max_keys_per_namespace,
                }
                .into());
            }
        }

        sqlx::query(
            "INSERT INTO extension_storage (install_id, namespace, key, value, revision, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (install_id, namespace, key) DO UPDATE SET \
             value = excluded.value, revision = excluded.revision, updated_at = excluded.updated_at",
        )
        .bind(install_id)
        .bind(namespace)
        .bind(key)
        .bind(value)
        .bind(to_i64(revision))
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        set_install_bytes(&mut tx, install_id, new_total).await?;
        let key_delta = if current.is_none() { 1 } else { 0 };
        let byte_delta = to_i64(new_size) - to_i64(old_size);
        add_namespace_usage(&mut tx, install_id, namespace, key_delta, byte_delta).await?;
        tx.commit().await?;
        Ok(revision)
    }

    /// Deletes one key if `condition` holds; returns whether a key was deleted. A missing
    /// key with [`WriteCondition::Any`] or [`WriteCondition::MustNotExist`] is `Ok(false)`.
    /// Committed before it returns.
    pub async fn storage_delete(
        &self,
        install_id: &str,
        namespace: &str,
        key: &str,
        condition: WriteCondition,
    ) -> Result<bool, StorageWriteError> {
        let _timer = self.queries.time("storage_delete");
        let _lane = self.lanes.enter(install_id).await;
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let (_, install_bytes) = lock_install(&mut tx, install_id, 0).await?;
        let current = current(&mut tx, install_id, namespace, key).await?;
        if !condition.holds(current.map(|c| c.revision)) {
            return Err(StorageWriteError::Conflict {
                current: current.map(|c| c.revision),
            });
        }
        let Some(current) = current else {
            // Nothing to delete; the transaction changed nothing and is rolled back.
            return Ok(false);
        };
        sqlx::query(
            "DELETE FROM extension_storage WHERE install_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(install_id)
        .bind(namespace)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        let size = len_u64(key.len()).saturating_add(current.value_bytes);
        set_install_bytes(&mut tx, install_id, install_bytes.saturating_sub(size)).await?;
        add_namespace_usage(&mut tx, install_id, namespace, -1, -to_i64(size)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Lists the entries of `namespace` whose key starts with `prefix`, in key order
    /// (byte order of the UTF-8 keys), strictly after `after` when given, at most `limit`
    /// (at least 1) of them, and stopping before the entry whose key and value bytes would
    /// take the page past `max_bytes` — except the first, which is always returned.
    ///
    /// The byte cap is applied in the database: entries past it come back without their
    /// values, so a page never loads more than `max_bytes` of values (plus one entry) into
    /// memory. Paging by passing the last key of a page as `after` never repeats an entry
    /// and never skips one that existed throughout, whatever is written between the pages.
    pub async fn storage_list(
        &self,
        install_id: &str,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        max_bytes: u64,
    ) -> Result<StoragePage, RegistryError> {
        let _timer = self.queries.time("storage_list");
        let limit = limit.max(1);
        // One more than asked, to know whether another page follows.
        let fetch = i64::from(limit) + 1;
        // Keys with the prefix are contiguous in byte order, starting at the prefix itself.
        let (start, bound) = match after.filter(|after| *after >= prefix) {
            Some(after) => (">", after),
            None => (">=", prefix),
        };
        // `running` is the page's bytes up to and including the row; rows are at least one
        // byte (keys are never empty), so `running = size` only on the first row.
        let sql = format!(
            "SELECT s.key, s.revision, \
             CASE WHEN p.running <= $5 OR p.running = p.size THEN s.value END AS value \
             FROM (SELECT key, size, SUM(size) OVER (ORDER BY key ROWS UNBOUNDED PRECEDING) AS running \
                   FROM (SELECT key, octet_length(key) + octet_length(value) AS size \
                         FROM extension_storage \
                         WHERE install_id = $1 AND namespace = $2 AND key {start} $3 \
                         ORDER BY key LIMIT $4) AS candidates) AS p \
             JOIN extension_storage AS s \
             ON s.install_id = $1 AND s.namespace = $2 AND s.key = p.key \
             ORDER BY s.key"
        );
        let rows = sqlx::query(&sql)
            .bind(install_id)
            .bind(namespace)
            .bind(bound)
            .bind(fetch)
            .bind(to_i64(max_bytes))
            .fetch_all(&self.pool)
            .await?;
        let mut page = StoragePage {
            entries: Vec::new(),
            more: false,
        };
        for row in &rows {
            let key: String = row.try_get("key")?;
            if !key.starts_with(prefix) {
                break;
            }
            let value: Option<Vec<u8>> = row.try_get("value")?;
            let Some(value) = value.filter(|_| page.entries.len() < limit as usize) else {
                // Past the count or the byte cap: another page follows.
                page.more = true;
                break;
            };
            page.entries.push(StorageEntry {
                key,
                value,
                revision: counter(row.try_get("revision")?, TABLE, "revision", install_id)?,
            });
        }
        Ok(page)
    }

    /// What `install_id` stores, per namespace and in total.
    pub async fn storage_usage(&self, install_id: &str) -> Result<StorageUsage, RegistryError> {
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT byte_count FROM extension_storage_install WHERE install_id = $1",
        )
        .bind(install_id)
        .fetch_optional(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT namespace, key_count, byte_count FROM extension_storage_namespace \
             WHERE install_id = $1 AND key_count > 0 ORDER BY namespace",
        )
        .bind(install_id)
        .fetch_all(&self.pool)
        .await?;
        let table = "extension_storage_namespace";
        let mut namespaces = Vec::with_capacity(rows.len());
        for row in &rows {
            namespaces.push(NamespaceUsage {
                namespace: row.try_get("namespace")?,
                keys: counter(row.try_get("key_count")?, table, "key_count", install_id)?,
                bytes: counter(row.try_get("byte_count")?, table, "byte_count", install_id)?,
            });
        }
        Ok(StorageUsage {
            bytes: bytes
                .map(|b| counter(b, "extension_storage_install", "byte_count", install_id))
                .transpose()?
                .unwrap_or(0),
            namespaces,
        })
    }
}

/// Takes the install's write lock, adding `bump` to its revision counter; returns the
/// counter after the bump and the install's stored bytes. The first statement of every
/// write transaction, so concurrent writers of one install queue here.
async fn lock_install(
    tx: &mut Tx,
    install_id: &str,
    bump: i64,
) -> Result<(u64, u64), RegistryError> {
    let row = sqlx::query(
        "INSERT INTO extension_storage_install (install_id, revision, byte_count) \
         VALUES ($1, $2, 0) \
         ON CONFLICT (install_id) DO UPDATE SET \
         revision = extension_storage_install.revision + $2 \
         RETURNING revision, byte_count",
    )
    .bind(install_id)
    .bind(bump)
    .fetch_one(&mut **tx)
    .await?;
    let table = "extension_storage_install";
    Ok((
        counter(row.try_get("revision")?, table, "revision", install_id)?,
        counter(row.try_get("byte_count")?, table, "byte_count", install_id)?,
    ))
}

/// The key's revision and value size, if it exists.
async fn current(
    tx: &mut Tx,
    install_id: &str,
    namespace: &str,
    key: &str,
) -> Result<Option<Current>, RegistryError> {
    let row = sqlx::query(
        "SELECT revision, length(value) AS value_bytes FROM extension_storage \
         WHERE install_id = $1 AND namespace = $2 AND key = $3",
    )
    .bind(install_id)
    .bind(namespace)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| {
        Ok(Current {
            revision: counter(row.try_get("revision")?, TABLE, "revision", install_id)?,
            value_bytes: counter(row.try_get("value_bytes")?, TABLE, "value", install_id)?,
        })
    })
    .transpose()
}

/// Keys the namespace holds.
async fn namespace_keys(
    tx: &mut Tx,
    install_id: &str,
    namespace: &str,
) -> Result<u64, RegistryError> {
    let keys: Option<i64> = sqlx::query_scalar(
        "SELECT key_count FROM extension_storage_namespace \
         WHERE install_id = $1 AND namespace = $2",
    )
    .bind(install_id)
    .bind(namespace)
    .fetch_optional(&mut **tx)
    .await?;
    keys.map(|k| counter(k, "extension_storage_namespace", "key_count", install_id))
        .transpose()
        .map(|k| k.unwrap_or(0))
}

async fn set_install_bytes(tx: &mut Tx, install_id: &str, bytes: u64) -> Result<(), RegistryError> {
    sqlx::query("UPDATE extension_storage_install SET byte_count = $2 WHERE install_id = $1")
        .bind(install_id)
        .bind(to_i64(bytes))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn add_namespace_usage(
    tx: &mut Tx,
    install_id: &str,
    namespace: &str,
    keys: i64,
    bytes: i64,
) -> Result<(), RegistryError> {
    sqlx::query(
        "INSERT INTO extension_storage_namespace (install_id, namespace, key_count, byte_count) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (install_id, namespace) DO UPDATE SET \
         key_count = extension_storage_namespace.key_count + excluded.key_count, \
         byte_count = extension_storage_namespace.byte_count + excluded.byte_count",
    )
    .bind(install_id)
    .bind(namespace)
    .bind(keys)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn entry(row: &DbRow, install_id: &str) -> Result<StorageEntry, RegistryError> {
    Ok(StorageEntry {
        key: row.try_get("key")?,
        value: row.try_get("value")?,
        revision: counter(row.try_get("revision")?, TABLE, "revision", install_id)?,
    })
}

/// A non-negative counter column as `u64`.
fn counter(
    value: i64,
    table: &'static str,
    column: &'static str,
    install_id: &str,
) -> Result<u64, RegistryError> {
    u64::try_from(value).map_err(|_| {
        RegistryError::corrupt(table, column, install_id, format!("negative value {value}"))
    })
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Sizes and revisions are far below `i64::MAX`; saturate rather than wrap if not.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
