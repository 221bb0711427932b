//! The execution log of gateway calls: the row each call that reached a resolved install
//! leaves, and the writer that stores rows and usage counters off the request path.
//!
//! A call hands its row to a bounded queue ([`ExecLog::submit`]) and never waits for the
//! database. One background task ([`ExecLogWriter`]) takes rows from the queue and writes
//! them in batches — up to [`ExecLogConfig::batch_rows`] rows, or whatever arrived within
//! [`ExecLogConfig::batch_interval`] of the batch's first row — each batch together with its
//! usage counters in one transaction. The writer sleeps out the interval instead of waking
//! for every row, so a busy gateway pays no thread wake-up per call for its log. When the queue is full a row is dropped and counted
//! rather than making the caller wait; the writer logs how many were dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, StatusCode};
use palisade_protocol::{ErrorCode, ExecuteStats};
use palisade_registry::quota::UsageTally;
use palisade_registry::{ExecutionRecord, Registry, ResolvedInstall};
use tokio::sync::{Notify, mpsc, oneshot};

/// The trigger recorded for calls through the gateway.
pub const TRIGGER_HTTP: &str = "http";
/// The outcome of a call whose caller went away before its answer ended.
pub const CANCELLED: &str = "cancelled";

/// Default bound on rows waiting to be written.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default most rows written in one transaction.
pub const DEFAULT_BATCH_ROWS: usize = 256;
/// Default longest wait for a batch to fill after its first row.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// How execution-log rows are queued and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLogConfig {
    /// Most rows waiting to be written; beyond it rows are dropped (and counted). At
    /// least 1.
    pub queue_capacity: usize,
    /// Most rows written in one transaction. At least 1.
    pub batch_rows: usize,
    /// How long a batch waits for more rows after its first one.
    pub batch_interval: Duration,
}

impl Default for ExecLogConfig {
    fn default() -> Self {
        ExecLogConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch_rows: DEFAULT_BATCH_ROWS,
            batch_interval: DEFAULT_BATCH_INTERVAL,
        }
    }
}

/// What happened to the rows handed to an [`ExecLog`] so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecLogStats {
    /// Rows written.
    pub written: u64,
    /// Rows dropped because the queue was full (or the writer had stopped).
    pub dropped: u64,
    /// Rows lost because writing their batch failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

enum Message {
    Row(Box<ExecutionRecord>),
    /// Answered once every row queued before it is written (or has failed).
    Flush(oneshot::Sender<()>),
}

/// The queue calls hand their execution-log rows to.
pub struct ExecLog {
    sender: mpsc::Sender<Message>,
    counters: Arc<Counters>,
    /// Cuts the writer's wait for a batch short: on a flush and when the log is dropped.
    wake: Arc<Notify>,
    /// The writer, until it is started: a log made outside a Tokio runtime starts it on
    /// first use.
    idle: Mutex<Option<ExecLogWriter>>,
    started: AtomicBool,
}

impl std::fmt::Debug for ExecLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecLog")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ExecLog {
    /// A log and its writer, which the caller runs (`tokio::spawn(writer.run())`).
    pub fn new(registry: Registry, config: &ExecLogConfig) -> (ExecLog, ExecLogWriter) {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let wake = Arc::new(Notify::new());
        let writer = ExecLogWriter {
            receiver,
            wake: Arc::clone(&wake),
            registry,
            batch_rows: config.batch_rows.max(1),
            batch_interval: config.batch_interval,
            counters: Arc::clone(&counters),
            reported_drops: 0,
        };
        let log = ExecLog {
            sender,
            counters,
            wake,
            idle: Mutex::new(None),
            started: AtomicBool::new(true),
        };
        (log, writer)
    }

    /// A log whose writer runs on the current Tokio runtime; made outside one, the writer
    /// starts with the first row.
    pub fn start(registry: Registry, config: &ExecLogConfig) -> ExecLog {
        let (mut log, writer) = Self::new(registry, config);
        log.idle = Mutex::new(Some(writer));
        log.started = AtomicBool::new(false);
        log.ensure_started();
        log
    }

    fn ensure_started(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = idle.take() {
            runtime.spawn(writer.run());
        }
        self.started.store(true, Ordering::Release);
    }

    /// Queues `row` for writing, without waiting: when the queue is full the row is
    /// dropped and counted in [`ExecLogStats::dropped`].
    pub fn submit(&self, row: ExecutionRecord) {
        self.ensure_started();
        if self.sender.try_send(Message::Row(Box::new(row))).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every row submitted before this call is written (or has failed). Call
    /// it once a server has stopped taking calls, before the process exits.
    pub async fn flush(&self) {
        self.ensure_started();
        let (ack, done) = oneshot::channel();
        if self.sender.send(Message::Flush(ack)).await.is_ok() {
            self.wake.notify_one();
            // An error means the writer is gone; nothing is left to wait for.
            let _ = done.await;
        }
    }

    /// What happened to the submitted rows so far.
    pub fn stats(&self) -> ExecLogStats {
        self.counts().stats()
    }

    /// A handle that reads this log's counts from elsewhere (the metrics export).
    pub fn counts(&self) -> ExecLogCounts {
        ExecLogCounts(Arc::clone(&self.counters))
    }
}

/// Reads an [`ExecLog`]'s counts.
#[derive(Debug, Clone)]
pub struct ExecLogCounts(Arc<Counters>);

impl ExecLogCounts {
    /// What happened to the submitted rows so far.
    pub fn stats(&self) -> ExecLogStats {
        ExecLogStats {
            written: self.0.written.load(Ordering::Relaxed),
            dropped: self.0.dropped.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ExecLog {
    fn drop(&mut self) {
        // The queue closes with this log: let the writer write what it holds now.
        self.wake.notify_one();
    }
}

/// The task that writes queued rows in batches. It ends, after writing what it holds,
/// when its [`ExecLog`] is dropped.
pub struct ExecLogWriter {
    receiver: mpsc::Receiver<Message>,
    wake: Arc<Notify>,
    registry: Registry,
    batch_rows: usize,
    batch_interval: Duration,
    counters: Arc<Counters>,
    /// The dropped count last logged.
    reported_drops: u64,
}

impl std::fmt::Debug for ExecLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecLogWriter")
            .field("batch_rows", &self.batch_rows)
            .field("batch_interval", &self.batch_interval)
            .finish_non_exhaustive()
    }
}

impl ExecLogWriter {
    /// Writes batches until the log is dropped and the queue is empty.
    pub async fn run(mut self) {
        let mut rows = Vec::with_capacity(self.batch_rows);
        let mut flushes = Vec::new();
        loop {
            let open = self.collect(&mut rows, &mut flushes).await;
            self.write(&mut rows).await;
            for ack in flushes.drain(..) {
                // The flusher may have given up waiting; that is fine.
                let _ = ack.send(());
            }
            self.report_drops();
            if !open {
                return;
            }
        }
    }

    /// Waits for a message, then lets the batch fill for the interval — sleeping rather
    /// than waking for every row, unless a full batch is already queued or a flush is
    /// asked for — and takes what arrived, up to a full batch. Returns whether the queue
    /// is still open.
    async fn collect(
        &mut self,
        rows: &mut Vec<ExecutionRecord>,
        flushes: &mut Vec<oneshot::Sender<()>>,
    ) -> bool {
        let Some(first) = self.receiver.recv().await else {
            return false;
        };
        take(first, rows, flushes);
        if flushes.is_empty() && self.receiver.len() + 1 < self.batch_rows {
            tokio::select! {
                () = tokio::time::sleep(self.batch_interval) => {}
                () = self.wake.notified() => {}
            }
        }
        while rows.len() < self.batch_rows && flushes.is_empty() {
            match self.receiver.try_recv() {
                Ok(message) => take(message, rows, flushes),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Writes `rows` and their usage in one transaction, and empties `rows`. When the
    /// database refuses the transaction (rather than being out of reach), the rows are
    /// written one by one (see [`Self::write_each`]).
    async fn write(&self, rows: &mut Vec<ExecutionRecord>) {
        if rows.is_empty() {
            return;
        }
        let count = u64::try_from(rows.len()).unwrap_or(u64::MAX);
        match self
            .registry
            .record_execution_batch(rows, &UsageTally::of_executions(rows))
            .await
        {
            Ok(()) => {
                self.counters.written.fetch_add(count, Ordering::Relaxed);
            }
            Err(err) if err.is_refused_by_database() => {
                tracing::warn!(error = %err, rows = count, "the database refused a batch of execution-log rows; writing them one by one");
                self.write_each(rows).await;
            }
            Err(err) => {
                self.counters.failed.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(error = %err, rows = count, "writing execution-log rows failed; they are lost");
            }
        }
        rows.clear();
    }

    /// Writes each row with its usage in a transaction of its own, so that a row the
    /// database refuses loses only itself (its call still counts in the usage). Stops at
    /// the first failure that is not the row's own (the database cannot be reached): the
    /// rows left are lost, rather than each waiting for the database in turn.
    async fn write_each(&self, rows: &[ExecutionRecord]) {
        for (at, row) in rows.iter().enumerate() {
            let one = std::slice::from_ref(row);
            match self
                .registry
                .record_execution_batch(one, &UsageTally::of_executions(one))
                .await
            {
                Ok(()) => {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) if err.is_refused_by_database() => self.lost(row, &err).await,
                Err(err) => {
                    let left = u64::try_from(rows.len() - at).unwrap_or(u64::MAX);
                    self.counters.failed.fetch_add(left, Ordering::Relaxed);
                    tracing::warn!(error = %err, rows = left, "writing execution-log rows failed; they are lost");
                    return;
                }
            }
        }
    }

    /// Counts `row` as lost, logs why, and still adds its call to the usage counters.
    async fn lost(&self, row: &ExecutionRecord, err: &palisade_registry::RegistryError) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            error = %err,
            request_id = %row.request_id,
            tenant = %row.tenant_id,
            extension = %row.extension_id,
            "the database refused an execution-log row; it is lost"
        );
        let usage = UsageTally::of_executions(std::slice::from_ref(row));
        if let Err(err) = self.registry.record_execution_batch(&[], &usage).await {
            tracing::warn!(error = %err, request_id = %row.request_id, "adding a lost row's call to the usage counters failed");
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            tracing::warn!(
                dropped = dropped - self.reported_drops,
                total = dropped,
                "execution-log queue full: rows dropped"
            );
            self.reported_drops = dropped;
        }
    }
}

fn take(message: Message, rows: &mut Vec<ExecutionRecord>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Row(row) => rows.push(*row),
        Message::Flush(ack) => flushes.push(ack),
    }
}

/// A row for a call of `install`; `template` is the matched endpoint (empty when none
/// matched), so caller-chosen path values never reach the log.
pub fn record(
    request_id: &str,
    install: &ResolvedInstall,
    method: &Method,
    template: Option<String>,
) -> ExecutionRecord {
    let mut row = ExecutionRecord::new(
        request_id,
        install.tenant_id.as_str(),
        install.extension_id.as_str(),
        TRIGGER_HTTP,
    );
    row.install_id = Some(install.install_id.clone());
    row.version_id = Some(install.version_id.clone());
    row.content_hash = Some(install.content_hash.to_string());
    row.method = method.as_str().to_owned();
    row.path = template.unwrap_or_default();
    row
}

/// Fills in how the call ended.
pub fn finish(
    row: &mut ExecutionRecord,
    status: StatusCode,
    error: Option<ErrorCode>,
    elapsed: Duration,
) {
    row.status = Some(status.as_u16());
    row.outcome = outcome(error).to_owned();
    row.error_code = error.map(|code| code.as_str().to_owned());
    row.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
}

/// Adds what the runner reported the call consumed.
pub fn add_stats(row: &mut ExecutionRecord, stats: ExecuteStats) {
    row.fuel_consumed = stats.fuel_consumed;
    row.peak_memory_bytes = Some(stats.peak_memory_bytes);
    row.egress_bytes = stats.egress_bytes;
    if !stats.log_excerpt.is_empty() {
        row.log_excerpt = Some(stats.log_excerpt);
    }
}

/// The short outcome word for a call that ended with `error` (none: the guest answered).
pub fn outcome(error: Option<ErrorCode>) -> &'static str {
    error.map_or("ok", ErrorCode::outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_registry::quota;

    #[test]
    fn outcomes() {
        assert_eq!(outcome(None), "ok");
        assert_eq!(outcome(Some(ErrorCode::TooLarge)), "rejected");
        assert_eq!(outcome(Some(ErrorCode::Timeout)), "timeout");
        assert_eq!(outcome(Some(ErrorCode::OutOfMemory)), "trap");
        assert_eq!(outcome(Some(ErrorCode::Unavailable)), "error");
    }

    #[test]
    fn usage_counts_calls_and_egress_of_resolved_installs() {
        let mut a = ExecutionRecord::new("r1", "t", "e", TRIGGER_HTTP);
        a.install_id = Some("i1".into());
        a.egress_bytes = 10;
        let mut b = a.clone();
        b.egress_bytes = 0;
        let unresolved = ExecutionRecord::new("r2", "t", "e", TRIGGER_HTTP);
        let usage = UsageTally::of_executions(&[a.clone(), b, unresolved]);
        let mut expected = UsageTally::new();
        expected.add("i1", quota::METRIC_CALLS, a.created_at_ms, 2);
        expected.add("i1", quota::METRIC_EGRESS_BYTES, a.created_at_ms, 10);
        assert_eq!(usage, expected);
    }
}
