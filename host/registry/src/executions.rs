//! The execution log: one row per invocation of an extension.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use crate::db::Row as DbRow;
use sqlx::Row;

use crate::db::{Backend, Connection};

use crate::Registry;
use crate::db::now_millis;
use crate::error::RegistryError;
use crate::quota::UsageTally;

/// Most rows [`Registry::recent_executions`] returns, whatever the caller asks for.
pub const MAX_RECENT_EXECUTIONS: u32 = 1000;

/// Most bytes of guest log kept in [`ExecutionRecord::log_excerpt`]; longer text is cut.
pub const MAX_LOG_EXCERPT_BYTES: usize = 8 * 1024;

/// One invocation of an extension, as written to `extension_execution_log`; the admin API
/// answers it as JSON with these field names (`docs/openapi.yaml`, `Execution`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionRecord {
    /// Row id (a UUID).
    pub id: String,
    /// The request id the call carried (`x-request-id`).
    pub request_id: String,
    /// The calling tenant.
    pub tenant_id: String,
    /// The extension called.
    pub extension_id: String,
    /// The install that served the call, if one was resolved.
    pub install_id: Option<String>,
    /// The version that served the call, if one was resolved.
    pub version_id: Option<String>,
    /// Content hash (`sha256:<hex>`) of the bundle that ran, if one was resolved.
    pub content_hash: Option<String>,
    /// What started the call: `http`, `event`, `schedule`, ...
    pub trigger: String,
    /// HTTP method of the call (empty when the trigger has none).
    pub method: String,
    /// Path inside the extension's API.
    pub path: String,
    /// HTTP status returned to the caller, if a response was produced.
    pub status: Option<u16>,
    /// Short outcome word: `ok`, `error`, `timeout`, `trap`, `rejected`, ...
    pub outcome: String,
    /// Stable error code when the call failed.
    pub error_code: Option<String>,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// WebAssembly fuel consumed, when fuel metering was on.
    pub fuel_consumed: Option<u64>,
    /// Peak linear memory of the instance, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Bytes sent and received over outgoing HTTP.
    pub egress_bytes: u64,
    /// A bounded excerpt of the guest's log lines (at most [`MAX_LOG_EXCERPT_BYTES`]).
    pub log_excerpt: Option<String>,
    /// Bytes of the guest's answer body sent to the caller (an answer cut after its status
    /// went out keeps the status, the reason in `error_code`, and how far it got here).
    pub response_bytes: Option<u64>,
    /// The event a call with trigger `event` delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Which attempt at delivering that event the call was (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The calling user (the `sub` of the caller's token), when a user called.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The W3C trace id of the call's trace (32 lowercase hex digits).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// When the call happened, unix epoch milliseconds.
    pub created_at_ms: i64,
}

impl ExecutionRecord {
    /// A record with a fresh id and the current time; every measurement empty, outcome `ok`.
    ///
    /// Ids are UUID v7: time-ordered, so new rows go at the end of the primary-key index
    /// instead of onto random pages of a large table.
    pub fn new(
        request_id: impl Into<String>,
        tenant_id: impl Into<String>,
        extension_id: impl Into<String>,
        trigger: impl Into<String>,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: request_id.into(),
            tenant_id: tenant_id.into(),
            extension_id: extension_id.into(),
            install_id: None,
            version_id: None,
            content_hash: None,
            trigger: trigger.into(),
            method: String::new(),
            path: String::new(),
            status: None,
            outcome: "ok".to_owned(),
            error_code: None,
            duration_ms: 0,
            fuel_consumed: None,
            peak_memory_bytes: None,
            egress_bytes: 0,
            log_excerpt: None,
            response_bytes: None,
            event_id: None,
            attempt: None,
            user_id: None,
            trace_id: None,
            created_at_ms: now_millis(),
        }
    }

    fn from_row(row: &DbRow) -> Result<Self, RegistryError> {
        let id: String = row.try_get("id")?;
        let status: Option<i64> = row.try_get("status")?;
        let status = status
            .map(u16::try_from)
            .transpose()
            .map_err(|e| RegistryError::corrupt("extension_execution_log", "status", &id, e))?;
        Ok(Self {
            request_id: row.try_get("request_id")?,
            tenant_id: row.try_get("tenant_id")?,
            extension_id: row.try_get("extension_id")?,
            install_id: row.try_get("install_id")?,
            version_id: row.try_get("version_id")?,
            content_hash: row.try_get("content_hash")?,
            trigger: row.try_get("trigger")?,
            method: row.try_get("method")?,
            path: row.try_get("path")?,
            status,
            outcome: row.try_get("outcome")?,
            error_code: row.try_get("error_code")?,
            duration_ms: to_u64(row.try_get("duration_ms")?),
            fuel_consumed: row.try_get::<Option<i64>, _>("fuel_consumed")?.map(to_u64),
            peak_memory_bytes: row
                .try_get::<Option<i64>, _>("peak_memory_bytes")?
                .map(to_u64),
            egress_bytes: to_u64(row.try_get("egress_bytes")?),
            log_excerpt: row.try_get("log_excerpt")?,
            response_bytes: row.try_get::<Option<i64>, _>("response_bytes")?.map(to_u64),
            event_id: row.try_get("event_id")?,
            attempt: row
                .try_get::<Option<i64>, _>("attempt")?
                .map(|a| u32::try_from(a).unwrap_or(u32::MAX)),
            user_id: row.try_get("user_id")?,
            trace_id: row.try_get("trace_id")?,
            created_at_ms: row.try_get("created_at")?,
            id,
        })
    }
}

/// Stored counters are never negative; clamp defensively instead of failing a read.
fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Counters above `i64::MAX` are stored as `i64::MAX`.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `row` fit for the text columns of both backends: PostgreSQL refuses NUL in text (and
/// would fail the whole statement), so each NUL in a text field becomes U+FFFD (`�`).
/// Everything else is stored as given; a row without NUL is not copied.
fn storable(row: &ExecutionRecord) -> Cow<'_, ExecutionRecord> {
    fn clean(text: &mut String) {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{fffd}");
        }
    }
    let texts = [
        Some(&row.id),
        Some(&row.request_id),
        Some(&row.tenant_id),
        Some(&row.extension_id),
        row.install_id.as_ref(),
        row.version_id.as_ref(),
        row.content_hash.as_ref(),
        Some(&row.trigger),
        Some(&row.method),
        Some(&row.path),
        Some(&row.outcome),
        row.error_code.as_ref(),
        row.log_excerpt.as_ref(),
        row.event_id.as_ref(),
        row.user_id.as_ref(),
        row.trace_id.as_ref(),
    ];
    if !texts.into_iter().flatten().any(|t| t.contains('\0')) {
        return Cow::Borrowed(row);
    }
    let mut row = row.clone();
    for text in [
        &mut row.id,
        &mut row.request_id,
        &mut row.tenant_id,
        &mut row.extension_id,
        &mut row.trigger,
        &mut row.method,
        &mut row.path,
        &mut row.outcome,
    ] {
        clean(text);
    }
    for text in [
        &mut row.install_id,
        &mut row.version_id,
        &mut row.content_hash,
        &mut row.error_code,
        &mut row.log_excerpt,
        &mut row.event_id,
        &mut row.user_id,
        &mut row.trace_id,
    ]
    .into_iter()
    .flatten()
    {
        clean(text);
    }
    Cow::Owned(row)
}

/// Columns of one execution-log row, in bind order.
const COLUMNS: &str = "id, request_id, tenant_id, extension_id, install_id, version_id, \
                       content_hash, trigger, method, path, status, outcome, error_code, \
                       duration_ms, fuel_consumed, peak_memory_bytes, egress_bytes, \
                       log_excerpt, response_bytes, event_id, attempt, user_id, trace_id, \
                       created_at";

/// Values bound per row (the entries of [`COLUMNS`]).
const COLUMN_COUNT: usize = 24;

/// Rows per `INSERT` statement: each statement is one round trip to the database (or to
/// SQLite's worker thread), so a batch goes in few of them: as many rows as stay under the
/// smallest limit of bound values SQLite builds have (999).
const ROWS_PER_STATEMENT: usize = 999 / COLUMN_COUNT;

/// `INSERT INTO extension_execution_log (...) VALUES (...), (...), ...` for `rows` rows.
///
/// PostgreSQL numbers its parameters (`$1, ..., $19), ($20, ...`). SQLite gets anonymous
/// `?` instead: the driver asks SQLite for every parameter's name, a linear search of the
/// statement's named parameters, which made a many-row statement with `$N` cost time
/// quadratic in its rows.
fn insert_statement(rows: usize, backend: Backend) -> String {
    let mut sql = format!("INSERT INTO extension_execution_log ({COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..COLUMN_COUNT {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push_str(&format!("${}", row * COLUMN_COUNT + column + 1));
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Appends `rows` on `conn`, [`ROWS_PER_STATEMENT`] to a statement.
async fn insert(
    conn: &mut Connection,
    backend: Backend,
    rows: &[ExecutionRecord],
) -> Result<(), RegistryError> {
    let rows: Vec<Cow<'_, ExecutionRecord>> = rows.iter().map(storable).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = insert_statement(chunk.len(), backend);
        let mut query = sqlx::query(&sql);
        for row in chunk {
            let excerpt = row
                .log_excerpt
                .as_deref()
                .map(|t| truncate(t, MAX_LOG_EXCERPT_BYTES));
            query = query
                .bind(&row.id)
                .bind(&row.request_id)
                .bind(&row.tenant_id)
                .bind(&row.extension_id)
                .bind(&row.install_id)
                .bind(&row.version_id)
                .bind(&row.content_hash)
                .bind(&row.trigger)
                .bind(&row.method)
                .bind(&row.path)
                .bind(row.status.map(i64::from))
                .bind(&row.outcome)
                .bind(&row.error_code)
                .bind(to_i64(row.duration_ms))
                .bind(row.fuel_consumed.map(to_i64))
                .bind(row.peak_memory_bytes.map(to_i64))
                .bind(to_i64(row.egress_bytes))
                .bind(excerpt)
                .bind(row.response_bytes.map(to_i64))
                .bind(&row.event_id)
                .bind(row.attempt.map(i64::from))
                .bind(&row.user_id)
                .bind(&row.trace_id)
                .bind(row.created_at_ms);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

impl RegistryError {
    /// Whether the database answered the statement with an error (a constraint, a value
    /// it refuses, ...) — an error of the data written, which other rows need not share —
    /// rather than failing to be reached.
    pub fn is_refused_by_database(&self) -> bool {
        matches!(self, RegistryError::Database(sqlx::Error::Database(_)))
    }
}

impl Registry {
    /// Appends one row to the execution log.
    pub async fn record_execution(&self, row: &ExecutionRecord) -> Result<(), RegistryError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, self.backend(), std::slice::from_ref(row)).await
    }

    /// Appends `rows` to the execution log and adds `usage` to the usage counters, in one
    /// transaction: all of it is written, or (on an error) none of it.
    pub async fn record_execution_batch(
        &self,
        rows: &[ExecutionRecord],
        usage: &UsageTally,
    ) -> Result<(), RegistryError> {
        let _timer = self.queries.time("record_executions");
        if rows.is_empty() && usage.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        insert(&mut tx, self.backend(), rows).await?;
        usage.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest execution-log rows of `tenant_id` (optionally of one extension), newest
    /// first, at most `limit` (capped at [`MAX_RECENT_EXECUTIONS`]).
    pub async fn recent_executions(
        &self,
        tenant_id: &str,
        extension_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecutionRecord>, RegistryError> {
        let filter = ExecutionFilter {
            extension_id: extension_id.map(str::to_owned),
            ..ExecutionFilter::default()
        };
        self.executions(tenant_id, &filter, limit).await
    }

    /// The newest execution-log rows of `tenant_id` that pass `filter`, newest first, at
    /// most `limit` (capped at [`MAX_RECENT_EXECUTIONS`]).
    pub async fn executions(
        &self,
        tenant_id: &str,
        filter: &ExecutionFilter,
        limit: u32,
    ) -> Result<Vec<ExecutionRecord>, RegistryError> {
        let mut sql = String::from("SELECT * FROM extension_execution_log WHERE tenant_id = $1");
        let mut next = 2;
        let mut parameter = |sql: &mut String, condition: &str| {
            sql.push_str(&format!(" AND {condition} ${next}"));
            next += 1;
        };
        if filter.extension_id.is_some() {
            parameter(&mut sql, "extension_id =");
        }
        if filter.status.is_some() {
            parameter(&mut sql, "status >=");
            parameter(&mut sql, "status <=");
        }
        if filter.since_ms.is_some() {
            parameter(&mut sql, "created_at >=");
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${next}"));

        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(extension_id) = &filter.extension_id {
            query = query.bind(extension_id);
        }
        if let Some(status) = &filter.status {
            query = query
                .bind(i64::from(*status.start()))
                .bind(i64::from(*status.end()));
        }
        if let Some(since_ms) = filter.since_ms {
            query = query.bind(since_ms);
        }
        let rows = query
            .bind(i64::from(limit.min(MAX_RECENT_EXECUTIONS)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ExecutionRecord::from_row).collect()
    }
}

/// A status filter that is neither a status nor a status class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a status (`503`) or a status class (`5xx`), not `{0}`")]
pub struct InvalidStatusFilter(pub String);

/// The statuses a filter names: one status (`503`, from 100 to 599) or a class (`5xx`,
/// from `1xx` to `5xx`).
pub fn status_filter(text: &str) -> Result<RangeInclusive<u16>, InvalidStatusFilter> {
    if let Some(class) = text.strip_suffix("xx")
        && let Ok(class @ 1..=5) = class.parse::<u16>()
    {
        return Ok(class * 100..=class * 100 + 99);
    }
    match text.parse::<u16>() {
        Ok(status @ 100..=599) => Ok(status..=status),
        _ => Err(InvalidStatusFilter(text.to_owned())),
    }
}

/// Which execution-log rows [`Registry::executions`] returns; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only rows of this extension.
    pub extension_id: Option<String>,
    /// Only rows whose HTTP status is in this range (a call that never answered has none).
    pub status: Option<RangeInclusive<u16>>,
    /// Only rows of calls made at or after this time, unix epoch milliseconds.
    pub since_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota;
    use crate::test_support::open_registry;

    fn record(tenant: &str, ext: &str, at: i64) -> ExecutionRecord {
        let mut r = ExecutionRecord::new(format!("req-{at}"), tenant, ext, "http");
        r.created_at_ms = at;
        r.method = "GET".into();
        r.path = "/items".into();
        r.status = Some(200);
        r.duration_ms = 12;
        r.fuel_consumed = Some(1_000);
        r.peak_memory_bytes = Some(65_536);
        r.egress_bytes = 42;
        r.log_excerpt = Some("hello".into());
        r
    }

    #[tokio::test]
    async fn records_round_trip_newest_first_per_tenant() {
        let (_dir, registry) = open_registry().await;
        let a1 = record("t1", "com.example.a", 1);
        let a2 = record("t1", "com.example.a", 3);
        let b = record("t1", "com.example.b", 2);
        let other = record("t2", "com.example.a", 4);
        for r in [&a1, &a2, &b, &other] {
            registry.record_execution(r).await.unwrap();
        }

        let all = registry.recent_executions("t1", None, 10).await.unwrap();
        assert_eq!(all, vec![a2.clone(), b, a1.clone()]);

        let only_a = registry
            .recent_executions("t1", Some("com.example.a"), 10)
            .await
            .unwrap();
        assert_eq!(only_a, vec![a2.clone(), a1]);

        let limited = registry.recent_executions("t1", None, 1).await.unwrap();
        assert_eq!(limited, vec![a2]);

        assert!(
            registry
                .recent_executions("t3", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn long_log_excerpts_are_cut_on_a_char_boundary() {
        let (_dir, registry) = open_registry().await;
        let mut r = record("t1", "com.example.a", 1);
        r.log_excerpt = Some("é".repeat(MAX_LOG_EXCERPT_BYTES));
        registry.record_execution(&r).await.unwrap();
        let back = registry.recent_executions("t1", None, 1).await.unwrap();
        let excerpt = back[0].log_excerpt.as_deref().unwrap();
        assert!(excerpt.len() <= MAX_LOG_EXCERPT_BYTES);
        assert_eq!(excerpt.len() % 2, 0);
    }

    #[tokio::test]
    async fn a_batch_writes_its_rows_and_usage_in_one_go() {
        let fixture = crate::test_support::Fixture::new().await;
        let install_id = fixture.install_simple("t1", "com.example.a").await;
        let registry = &fixture.registry;
        let rows: Vec<_> = (1..=3)
            .map(|at| record("t1", "com.example.a", at))
            .collect();
        let mut usage = UsageTally::new();
        usage.add(&install_id, quota::METRIC_CALLS, 1, 3);
        // Usage of an install removed since the calls is skipped, not an error.
        usage.add("gone", quota::METRIC_CALLS, 1, 1);
        registry
            .record_execution_batch(&rows, &usage)
            .await
            .unwrap();

        let back = registry.recent_executions("t1", None, 10).await.unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], rows[2]);
        assert_eq!(
            registry
                .quota_usage(&install_id, quota::METRIC_CALLS, 1)
                .await
                .unwrap(),
            3
        );
        registry
            .record_execution_batch(&[], &UsageTally::new())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_batch_of_several_statements_writes_every_row_as_given() {
        let (_dir, registry) = open_registry().await;
        let count = ROWS_PER_STATEMENT * 2 + 7;
        let rows: Vec<_> = (0..count)
            .map(|at| {
                let mut row = record("t1", "com.example.a", i64::try_from(at).unwrap());
                row.status = (at % 3 == 0).then_some(500);
                row.fuel_consumed = (at % 2 == 0).then(|| u64::try_from(at).unwrap());
                row.log_excerpt = (at % 5 != 0).then(|| format!("line {at}"));
                row
            })
            .collect();
        registry
            .record_execution_batch(&rows, &UsageTally::new())
            .await
            .unwrap();
        let mut back = registry
            .recent_executions("t1", None, MAX_RECENT_EXECUTIONS)
            .await
            .unwrap();
        back.reverse();
        assert_eq!(back, rows);
    }

    #[test]
    fn statements_number_their_values_row_after_row() {
        let sql = insert_statement(2, Backend::Postgres);
        assert!(sql.contains("VALUES ($1, $2, "), "{sql}");
        assert!(sql.contains("$24), ($25, "), "{sql}");
        assert!(sql.ends_with("$48)"), "{sql}");
        let sql = insert_statement(2, Backend::Sqlite);
        assert_eq!(sql.matches('?').count(), 2 * COLUMN_COUNT, "{sql}");
        assert!(!sql.contains('$'), "{sql}");
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
    }

    #[tokio::test]
    async fn a_failing_batch_writes_nothing() {
        let (_dir, registry) = open_registry().await;
        let row = record("t1", "com.example.a", 1);
        // The last row repeats the first's id, in a later statement than the first: the
        // batch fails as a whole.
        let mut rows = vec![row.clone()];
        rows.extend(
            (2..=ROWS_PER_STATEMENT).map(|at| record("t1", "x", i64::try_from(at).unwrap())),
        );
        rows.push(row);
        let err = registry
            .record_execution_batch(&rows, &UsageTally::new())
            .await;
        assert!(err.is_err());
        assert!(
            registry
                .recent_executions("t1", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// PostgreSQL refuses NUL in text and fails the whole statement, losing every row of
    /// the batch: NUL in any text field is stored as U+FFFD instead, on both backends.
    #[tokio::test]
    async fn nul_in_text_fields_is_stored_as_a_replacement_character() {
        let (_dir, registry) = open_registry().await;
        let mut bad = record("t1", "com.example.a", 1);
        bad.request_id = "req\0nul".into();
        bad.path = "/a\0b".into();
        bad.error_code = Some("x\0".into());
        bad.log_excerpt = Some("stdout before\0after\n".into());
        let good = record("t1", "com.example.a", 2);
        registry
            .record_execution_batch(&[bad.clone(), good.clone()], &UsageTally::new())
            .await
            .unwrap();
        let back = registry.recent_executions("t1", None, 10).await.unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], good);
        assert_eq!(back[1].request_id, "req\u{fffd}nul");
        assert_eq!(back[1].path, "/a\u{fffd}b");
        assert_eq!(back[1].error_code.as_deref(), Some("x\u{fffd}"));
        assert_eq!(
            back[1].log_excerpt.as_deref(),
            Some("stdout before\u{fffd}after\n")
        );
        assert!(matches!(storable(&good), Cow::Borrowed(_)));
    }

    #[tokio::test]
    async fn rows_are_filtered_by_status_range_time_and_extension_and_keep_user_and_trace() {
        let (_dir, registry) = open_registry().await;
        let mut rows = Vec::new();
        for (at, ext, status) in [
            (10, "com.example.a", Some(200)),
            (20, "com.example.a", Some(503)),
            (30, "com.example.b", Some(500)),
            (40, "com.example.a", Some(599)),
            (50, "com.example.a", None),
            (60, "com.example.a", Some(404)),
        ] {
            let mut row = record("t1", ext, at);
            row.status = status;
            row.user_id = Some(format!("user-{at}"));
            row.trace_id = Some(format!("{at:032x}"));
            rows.push(row);
        }
        registry
            .record_execution_batch(&rows, &UsageTally::new())
            .await
            .unwrap();
        let ats = |found: Vec<ExecutionRecord>| -> Vec<i64> {
            found.iter().map(|r| r.created_at_ms).collect()
        };

        let server_errors = ExecutionFilter {
            status: Some(500..=599),
            ..ExecutionFilter::default()
        };
        let found = registry.executions("t1", &server_errors, 10).await.unwrap();
        assert_eq!(found[0], rows[3], "user and trace id are read back");
        assert_eq!(ats(found), [40, 30, 20]);

        let filter = ExecutionFilter {
            extension_id: Some("com.example.a".into()),
            since_ms: Some(20),
            ..server_errors
        };
        let found = registry.executions("t1", &filter, 10).await.unwrap();
        assert_eq!(ats(found), [40, 20]);

        let filter = ExecutionFilter {
            since_ms: Some(45),
            ..ExecutionFilter::default()
        };
        let found = registry.executions("t1", &filter, 10).await.unwrap();
        assert_eq!(
            ats(found),
            [60, 50],
            "rows without a status pass no status filter only"
        );
        assert!(
            registry
                .executions("t2", &filter, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_status_filter_is_a_status_or_a_class() {
        assert_eq!(status_filter("503"), Ok(503..=503));
        assert_eq!(status_filter("5xx"), Ok(500..=599));
        assert_eq!(status_filter("1xx"), Ok(100..=199));
        for bad in ["6xx", "0xx", "xx", "5XX", "99", "600", "five", ""] {
            let err = status_filter(bad).unwrap_err();
            assert_eq!(err, InvalidStatusFilter(bad.to_owned()));
        }
    }

    #[test]
    fn truncate_keeps_short_text() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }
}
