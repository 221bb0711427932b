//! The execution-log writer: rows and usage arrive in batches, a full queue drops and
//! counts instead of waiting, and nothing held is lost when the log is flushed or closed.

use palisade_registry::ExecutionRecord;
use palisade_registry::quota::METRIC_CALLS;

use super::*;
use crate::execlog::{ExecLog, ExecLogConfig, ExecLogStats, TRIGGER_HTTP};

const EXT: &str = "com.example.logged";

const MANIFEST: &str = r#"{"id":"com.example.logged","name":"Logged","publisher":"Example",
    "version":"1.0.0","runtime":"wasi-http@0.2","component":"logged.wasm",
    "api":{"endpoints":[{"method":"GET","path":"/items"}]}}"#;

/// A registry with [`EXT`] installed for [`TENANT`], and the install's id.
async fn setup() -> (Harness, String) {
    let h = Harness::new(NO_RUNNER).await;
    let install = h.install(TENANT, MANIFEST).await;
    (h, install.install_id)
}

fn row(install_id: &str, n: usize) -> ExecutionRecord {
    let mut row = ExecutionRecord::new(format!("req-{n}"), TENANT, EXT, TRIGGER_HTTP);
    row.install_id = Some(install_id.to_owned());
    row.status = Some(200);
    row
}

async fn stored(h: &Harness) -> Vec<ExecutionRecord> {
    h.registry
        .recent_executions(TENANT, Some(EXT), 100)
        .await
        .unwrap()
}

fn config(queue_capacity: usize, batch_rows: usize, batch_interval: Duration) -> ExecLogConfig {
    ExecLogConfig {
        queue_capacity,
        batch_rows,
        batch_interval,
    }
}

#[tokio::test]
async fn rows_and_their_usage_are_written_in_batches() {
    let (h, install_id) = setup().await;
    let (log, writer) = ExecLog::new(
        h.registry.clone(),
        &config(100, 2, Duration::from_secs(3600)),
    );
    tokio::spawn(writer.run());
    for n in 0..5 {
        log.submit(row(&install_id, n));
    }
    log.flush().await;
    let rows = stored(&h).await;
    assert_eq!(rows.len(), 5);
    let calls = h
        .registry
        .quota_usage(&install_id, METRIC_CALLS, rows[0].created_at_ms)
        .await
        .unwrap();
    assert_eq!(calls, 5);
    assert_eq!(
        log.stats(),
        ExecLogStats {
            written: 5,
            dropped: 0,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_rows_instead_of_waiting() {
    let (h, install_id) = setup().await;
    let (log, writer) = ExecLog::new(
        h.registry.clone(),
        &ExecLogConfig {
            queue_capacity: 3,
            ..ExecLogConfig::default()
        },
    );
    // Nothing takes rows off the queue yet: the fourth and fifth do not fit.
    for n in 0..5 {
        log.submit(row(&install_id, n));
    }
    assert_eq!(log.stats().dropped, 2);
    tokio::spawn(writer.run());
    log.flush().await;
    assert_eq!(stored(&h).await.len(), 3);
    assert_eq!(
        log.stats(),
        ExecLogStats {
            written: 3,
            dropped: 2,
            failed: 0
        }
    );
}

#[tokio::test]
async fn a_closed_log_writes_what_its_writer_holds() {
    let (h, install_id) = setup().await;
    // Batches that would wait an hour to fill.
    let (log, writer) = ExecLog::new(
        h.registry.clone(),
        &config(100, 1000, Duration::from_secs(3600)),
    );
    let writer = tokio::spawn(writer.run());
    for n in 0..3 {
        log.submit(row(&install_id, n));
    }
    drop(log);
    writer.await.unwrap();
    assert_eq!(stored(&h).await.len(), 3);
}

#[tokio::test]
async fn a_failed_write_is_counted() {
    let (h, install_id) = setup().await;
    let (log, writer) = ExecLog::new(h.registry.clone(), &ExecLogConfig::default());
    tokio::spawn(writer.run());
    h.registry.pool().close().await;
    log.submit(row(&install_id, 1));
    log.submit(row(&install_id, 2));
    log.flush().await;
    assert_eq!(
        log.stats(),
        ExecLogStats {
            written: 0,
            dropped: 0,
            failed: 2
        }
    );
}

#[tokio::test]
async fn the_gateway_counts_the_rows_of_its_calls() {
    let (h, _) = setup().await;
    for _ in 0..3 {
        let reply = h.get_as(TENANT, &format!("/api/ext/{EXT}/items")).await;
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    h.state.flush_execution_log().await;
    assert_eq!(
        h.state.execution_log_stats().written,
        3,
        "{:?}",
        h.state.execution_log_stats()
    );
    let rows = stored(&h).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.error_code.as_deref() == Some("unavailable"))
    );
}

/// A row the database refuses (here: an id already stored) used to fail its whole batch,
/// losing every other tenant's row and usage with it. Now the batch is written again one
/// row at a time: the refused row alone is lost, and its call still counts.
#[tokio::test]
async fn a_row_the_database_refuses_loses_only_itself() {
    let (h, install_id) = setup().await;
    let (log, writer) = ExecLog::new(
        h.registry.clone(),
        &config(100, 1000, Duration::from_secs(3600)),
    );
    tokio::spawn(writer.run());
    let first = row(&install_id, 0);
    log.submit(first.clone());
    log.flush().await;

    let mut repeated = row(&install_id, 99);
    repeated.id = first.id.clone();
    for n in 1..=2 {
        log.submit(row(&install_id, n));
    }
    log.submit(repeated);
    for n in 3..=4 {
        log.submit(row(&install_id, n));
    }
    log.flush().await;

    let rows = stored(&h).await;
    let mut ids: Vec<_> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["req-0", "req-1", "req-2", "req-3", "req-4"]);
    assert_eq!(
        log.stats(),
        ExecLogStats {
            written: 5,
            dropped: 0,
            failed: 1
        }
    );
    let calls = h
        .registry
        .quota_usage(&install_id, METRIC_CALLS, rows[0].created_at_ms)
        .await
        .unwrap();
    assert_eq!(calls, 6);
}
