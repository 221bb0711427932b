//! `palisade:extension/log`: structured log lines from the guest, bounded per call, written
//! to the operator's log with the invocation's identifiers and kept for the execution log.
//! Captured stdout/stderr lines end up here too.
//!
//! What a guest writes is untrusted text:
//! * control characters (and Unicode line separators and bidirectional overrides) are
//!   escaped (`\n`, `\0`, `\u{1b}`, ...) in messages, keys and values, so a line can never
//!   pose as another line of the operator's log or of the excerpt;
//! * a call keeps at most `max_log_lines` lines and `max_log_bytes` bytes; the first line
//!   past either bound ends what is kept, and a last line of level [`CUT_LEVEL`] says how
//!   many lines were dropped;
//! * lines reach the operator's log through a token bucket per install
//!   ([`OperatorLogLimiter`]); lines past it are kept for the execution log but not
//!   written to the operator's log, and the next line that passes reports how many were
//!   suppressed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::current::log::{self, Field, Level};
use crate::capability::{Capability, CapabilityKey, Configure, Linked, Prepare};
use crate::state::InstanceState;

/// Bound on fields per line and on each key/value's length.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 1024;

/// The level of the line that marks where a call's log was cut.
pub const CUT_LEVEL: &str = "cut";

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`; `stdout`/`stderr` for captured output;
    /// [`CUT_LEVEL`] for the platform's mark that later lines were dropped.
    pub level: &'static str,
    /// The message, control characters escaped, cut to the configured bound.
    pub message: String,
    /// Key/value fields, bounded in number and size, control characters escaped.
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// Whether this is the platform's mark that the call's log was cut here.
    pub fn is_cut_mark(&self) -> bool {
        self.level == CUT_LEVEL
    }

    /// Bytes this line counts against a call's `max_log_bytes`.
    fn size(&self) -> usize {
        self.level.len()
            + self.message.len()
            + self
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Bounds on what one call keeps of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Lines kept.
    pub max_lines: usize,
    /// Total bytes kept (level, message, keys and values of every line).
    pub max_bytes: usize,
    /// Bytes of one message kept (longer ones are cut with `…`).
    pub max_message_bytes: usize,
}

/// Where the lines of one call go besides the execution log: the operator's log, inside
/// `span`, as far as the install's share of `limiter` allows.
#[derive(Debug)]
pub struct OperatorSink<'a> {
    /// The invocation's span (request id, tenant, extension, version, content hash).
    pub span: tracing::Span,
    /// The runtime's limiter.
    pub limiter: &'a std::sync::Arc<OperatorLogLimiter>,
    /// The install whose bucket the lines draw from.
    pub install_id: &'a str,
}

/// Per-call state of the log capability.
#[derive(Debug)]
pub struct LogState {
    lines: Vec<LogLine>,
    kept_bytes: usize,
    dropped: u64,
    bounds: LogBounds,
    span: tracing::Span,
    limiter: std::sync::Arc<OperatorLogLimiter>,
    install_id: String,
    suppressed: u64,
}

impl LogState {
    /// Prepares the state for one call.
    pub fn new(bounds: LogBounds, sink: OperatorSink<'_>) -> Self {
        LogState {
            lines: Vec::new(),
            kept_bytes: 0,
            dropped: 0,
            bounds,
            span: sink.span,
            limiter: std::sync::Arc::clone(sink.limiter),
            install_id: sink.install_id.to_owned(),
            suppressed: 0,
        }
    }

    /// Records one line, or counts it as dropped past the bounds. Once a line has been
    /// dropped every later line is too, so what is kept is the start of the call's log.
    pub fn push(&mut self, level: &'static str, message: &str, fields: Vec<(String, String)>) {
        if self.dropped > 0 || self.lines.len() >= self.bounds.max_lines {
            self.dropped += 1;
            return;
        }
        let line = LogLine {
            level,
            message: truncate(&escape_controls(message), self.bounds.max_message_bytes),
            fields: fields
                .into_iter()
                .map(|(k, v)| {
                    (
                        escape_controls(&k).into_owned(),
                        escape_controls(&v).into_owned(),
                    )
                })
                .collect(),
        };
        let size = line.size();
        if self.kept_bytes + size > self.bounds.max_bytes {
            self.dropped += 1;
            return;
        }
        self.emit(&line);
        self.kept_bytes += size;
        self.lines.push(line);
    }

    /// Writes `line` to the operator's log, if the install's bucket allows.
    fn emit(&mut self, line: &LogLine) {
        let suppressed_before = match self.limiter.admit(&self.install_id) {
            Admission::Refused => {
                self.suppressed += 1;
                return;
            }
            Admission::Admitted { suppressed_before } => suppressed_before,
        };
        let _entered = self.span.enter();
        if suppressed_before > 0 {
            tracing::warn!(
                target: "guest",
                install = %self.install_id,
                suppressed = suppressed_before,
                "guest log lines of this install were not written here (operator-log rate limit)"
            );
        }
        let LogLine {
            level,
            message,
            fields,
        } = line;
        match *level {
            "error" | "stderr" => tracing::error!(target: "guest", level, ?fields, "{message}"),
            "warn" => tracing::warn!(target: "guest", level, ?fields, "{message}"),
            "debug" | "trace" => tracing::debug!(target: "guest", level, ?fields, "{message}"),
            _ => tracing::info!(target: "guest", level, ?fields, "{message}"),
        }
    }

    /// Adds captured output, one line per text line.
    pub fn push_output(&mut self, level: &'static str, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            if !line.trim().is_empty() {
                self.push(level, line, Vec::new());
            }
        }
    }

    /// Lines of this call kept from the operator's log by the rate limit.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// The lines kept and the number dropped. When lines were dropped, the last line kept
    /// is a [`CUT_LEVEL`] mark saying how many.
    pub fn finish(mut self) -> (Vec<LogLine>, u64) {
        self.take()
    }

    /// Takes the lines kept so far and the number dropped, as [`Self::finish`] does.
    fn take(&mut self) -> (Vec<LogLine>, u64) {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                level: CUT_LEVEL,
                message: format!(
                    "log cut here: {} more lines dropped (a call keeps at most {} lines, {} bytes)",
                    self.dropped, self.bounds.max_lines, self.bounds.max_bytes
                ),
                fields: Vec::new(),
            });
        }
        (lines, self.dropped)
    }
}

/// A call's [`LogState`], shared between its instance (which writes) and the code that
/// runs the call (which reads it when the call ends, also when the call is cut off by its
/// deadline while the instance is still inside a host call).
#[derive(Debug, Clone)]
pub struct SharedLog(std::sync::Arc<Mutex<LogState>>);

impl SharedLog {
    /// Shares `state`.
    pub fn new(state: LogState) -> Self {
        SharedLog(std::sync::Arc::new(Mutex::new(state)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // A panic while holding the lock ends the call; its lines are still worth keeping.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`LogState::push`].
    pub fn push(&self, level: &'static str, message: &str, fields: Vec<(String, String)>) {
        self.lock().push(level, message, fields);
    }

    /// See [`LogState::push_output`].
    pub fn push_output(&self, level: &'static str, bytes: &[u8]) {
        self.lock().push_output(level, bytes);
    }

    /// Takes the lines kept so far and the number dropped (see [`LogState::finish`]).
    pub fn take(&self) -> (Vec<LogLine>, u64) {
        self.lock().take()
    }
}

/// Whether `c` must not appear raw in a log line: control characters (C0, DEL, C1), the
/// Unicode line and paragraph separators, and the bidirectional embedding, override and
/// isolate controls (which can make a line read as something else).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character of [`must_escape`] written as its Rust escape (`\n`, `\0`,
/// `\u{1b}`, ...). Other characters, the backslash included, are kept as they are.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if must_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The answer of [`OperatorLogLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Write the line; `suppressed_before` lines of this install were refused since the
    /// last line written.
    Admitted {
        /// Lines refused since the install's last admitted line.
        suppressed_before: u64,
    },
    /// Do not write the line to the operator's log.
    Refused,
}

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    suppressed: u64,
}

/// Token buckets, one per install, for the guest lines written to the operator's log: on
/// average `per_second` lines a second, in bursts of up to `burst`. The map is sharded and
/// bounded; when a shard is full, idle (full) buckets go first, then the least recently
/// used.
#[derive(Debug)]
pub struct OperatorLogLimiter {
    per_second: f64,
    burst: f64,
    shard_capacity: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

/// Buckets kept per runtime (installs that logged recently).
const MAX_BUCKETS: usize = 100_000;

impl OperatorLogLimiter {
    /// A limiter of `per_second` lines a second per install, bursts of `burst` (at least
    /// 1). `per_second` of 0 (or less) turns the limit off.
    pub fn new(per_second: f64, burst: u32) -> Self {
        OperatorLogLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            shard_capacity: MAX_BUCKETS.div_ceil(SHARDS),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Whether one more line of `install_id` may be written now.
    pub fn admit(&self, install_id: &str) -> Admission {
        self.admit_at(install_id, Instant::now())
    }

    fn admit_at(&self, install_id: &str, now: Instant) -> Admission {
        if self.per_second <= 0.0 || !self.per_second.is_finite() {
            return Admission::Admitted {
                suppressed_before: 0,
            };
        }
        let shard = &self.shards[self.shard_of(install_id)];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // The install's id is copied only when its bucket is created.
        if !buckets.contains_key(install_id) {
            if buckets.len() >= self.shard_capacity {
                self.evict(&mut buckets, now);
            }
            buckets.insert(
                install_id.to_owned(),
                Bucket {
                    tokens: self.burst,
                    updated: now,
                    suppressed: 0,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(install_id) else {
            return Admission::Refused;
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admission::Admitted {
                suppressed_before: std::mem::take(&mut bucket.suppressed),
            }
        } else {
            bucket.suppressed += 1;
            Admission::Refused
        }
    }

    fn shard_of(&self, install_id: &str) -> usize {
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        (self.hasher.hash_one(install_id) % SHARDS as u64) as usize
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let burst = self.burst;
        let per_second = self.per_second;
        buckets.retain(|_, b| {
            let refilled =
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second;
            refilled < burst
        });
        if buckets.len() >= self.shard_capacity
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

/// The `log` capability: the bounds of a call's log and the runtime's limiter of lines
/// written to the operator's log. Every call has a log ([`Log::call_log`]); the
/// capability links the interface through which the guest writes to it.
#[derive(Debug)]
pub(crate) struct Log {
    bounds: LogBounds,
    limiter: std::sync::Arc<OperatorLogLimiter>,
}

impl Log {
    /// The log of one call, kept for every call: its stdout and stderr are written to it
    /// whether or not the guest may write lines of its own.
    pub(crate) fn call_log(&self, install_id: &str, span: &tracing::Span) -> SharedLog {
        SharedLog::new(LogState::new(
            self.bounds,
            OperatorSink {
                span: span.clone(),
                limiter: &self.limiter,
                install_id,
            },
        ))
    }
}

impl Capability for Log {
    const KEY: CapabilityKey = CapabilityKey::Log;
    type State = SharedLog;

    fn configure(runtime: &Configure<'_>) -> Self {
        let config = runtime.config;
        Log {
            bounds: LogBounds {
                max_lines: config.max_log_lines,
                max_bytes: config.max_log_bytes,
                max_message_bytes: config.max_log_message_bytes,
            },
            limiter: std::sync::Arc::new(OperatorLogLimiter::new(
                config.operator_log_lines_per_second,
                config.operator_log_burst,
            )),
        }
    }

    /// The call's log, which the guest writes to only when granted (its stdout and
    /// stderr reach the log either way).
    fn prepare(&self, call: &Prepare<'_>) -> Option<SharedLog> {
        call.invocation.grants.log.then(|| call.log.clone())
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        log::add_to_linker::<_, Log>(linker, |s| s.caps.linked::<Log>())
    }
}

impl HasData for Log {
    type Data<'a> = Linked<'a, SharedLog>;
}

impl log::Host for Linked<'_, SharedLog> {
    fn write(&mut self, level: Level, message: String, fields: Vec<Field>) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let fields = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|f| {
                (
                    truncate(&f.key, MAX_FIELD_BYTES),
                    truncate(&f.value, MAX_FIELD_BYTES),
                )
            })
            .collect();
        self.state()?.push(level, &message, fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    const BOUNDS: LogBounds = LogBounds {
        max_lines: 1000,
        max_bytes: 256 * 1024,
        max_message_bytes: 4096,
    };

    fn state(bounds: LogBounds, limiter: &Arc<OperatorLogLimiter>) -> LogState {
        LogState::new(
            bounds,
            OperatorSink {
                span: tracing::Span::none(),
                limiter,
                install_id: "install-1",
            },
        )
    }

    fn unlimited() -> Arc<OperatorLogLimiter> {
        Arc::new(OperatorLogLimiter::new(0.0, 1))
    }

    #[test]
    fn lines_are_bounded_and_counted() {
        let bounds = LogBounds {
            max_lines: 2,
            max_message_bytes: 5,
            ..BOUNDS
        };
        let mut state = state(bounds, &unlimited());
        state.push("info", "hello world", vec![]);
        state.push("info", "two", vec![]);
        state.push("info", "three", vec![]);
        let (lines, dropped) = state.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].message, "hello…");
        assert_eq!(dropped, 1);
        assert!(lines[2].is_cut_mark());
    }

    /// 1000 lines of 4 KiB (4 MiB) keep at most `max_bytes`, and the cut is marked with
    /// the number of lines dropped.
    #[test]
    fn total_log_bytes_kept_per_call_are_capped_and_the_cut_is_marked() {
        let mut state = state(BOUNDS, &unlimited());
        let message = "x".repeat(4096);
        for _ in 0..1000 {
            state.push("info", &message, vec![("k".into(), "v".into())]);
        }
        let (lines, dropped) = state.finish();
        let kept: usize = lines.iter().map(LogLine::size).sum();
        assert!(kept <= BOUNDS.max_bytes + 200, "{kept} bytes kept");
        let guest_lines = lines.iter().filter(|l| !l.is_cut_mark()).count();
        assert_eq!(guest_lines, BOUNDS.max_bytes / (4 + 4096 + 2));
        assert_eq!(dropped, 1000 - guest_lines as u64);
        let mark = lines.last().unwrap();
        assert!(mark.is_cut_mark());
        assert!(
            mark.message
                .contains(&format!("{dropped} more lines dropped")),
            "{}",
            mark.message
        );
        // A small line after the cut is dropped too: what is kept is a prefix.
        let mut state = super::tests::state(
            LogBounds {
                max_bytes: 20,
                ..BOUNDS
            },
            &unlimited(),
        );
        state.push("info", "0123456789", vec![]);
        state.push("info", "0123456789", vec![]);
        state.push("info", "x", vec![]);
        let (lines, dropped) = state.finish();
        assert_eq!(dropped, 2);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
    }

    #[test]
    fn control_characters_are_escaped_in_messages_keys_and_values() {
        let mut state = state(BOUNDS, &unlimited());
        state.push(
            "info",
            "ok\n2026-01-01T00:00:00Z ERROR forged\0\u{1b}[31m\r\u{2028}\u{202e}",
            vec![("k\n".into(), "v\0".into())],
        );
        state.push_output("stdout", b"before\0after\x07\n\tindented\n");
        let (lines, _) = state.finish();
        assert_eq!(
            lines[0].message,
            "ok\\n2026-01-01T00:00:00Z ERROR forged\\0\\u{1b}[31m\\r\\u{2028}\\u{202e}"
        );
        assert_eq!(lines[0].fields, vec![("k\\n".into(), "v\\0".into())]);
        assert_eq!(lines[1].message, "before\\0after\\u{7}");
        assert_eq!(lines[2].message, "\\tindented");
        for line in &lines {
            assert!(!line.message.chars().any(must_escape), "{line:?}");
        }
        assert_eq!(escape_controls("plain \\n é"), "plain \\n é");
    }

    /// A writer for a test subscriber that keeps what the operator's log would show.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn operator_log(run: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_guest_cannot_forge_operator_log_lines() {
        let text = operator_log(|| {
            let mut state = state(BOUNDS, &unlimited());
            state.push(
                "info",
                "innocent\n2026-12-06T21:00:00.000000Z ERROR palisade_runner: forged",
                vec![],
            );
            state.push_output("stderr", b"a\rb\0c\n");
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("innocent\\n2026"), "{text}");
        assert!(text.contains("a\\rb\\0c"), "{text}");
    }

    /// One install cannot flood the operator's log: past its burst, lines are kept for the
    /// execution log but not written; another install is not affected; the next line
    /// written says how many were held back.
    #[test]
    fn guest_lines_reach_the_operator_log_at_a_bounded_rate_per_install() {
        let limiter = Arc::new(OperatorLogLimiter::new(1.0, 20));
        let mut noisy = state(BOUNDS, &limiter);
        let text = operator_log(|| {
            for i in 0..500 {
                noisy.push("info", &format!("noisy {i}"), vec![]);
            }
            let mut quiet = LogState::new(
                BOUNDS,
                OperatorSink {
                    span: tracing::Span::none(),
                    limiter: &limiter,
                    install_id: "install-2",
                },
            );
            quiet.push("info", "quiet line", vec![]);
        });
        assert_eq!(text.matches("noisy ").count(), 20, "{text}");
        assert!(text.contains("quiet line"));
        assert_eq!(noisy.suppressed(), 480);
        let (lines, dropped) = noisy.finish();
        assert_eq!((lines.len(), dropped), (500, 0));

        let start = Instant::now();
        assert_eq!(
            limiter.admit_at("install-1", start + Duration::from_secs(2)),
            Admission::Admitted {
                suppressed_before: 480
            }
        );
    }

    #[test]
    fn the_limiter_refills_and_can_be_turned_off() {
        let limiter = OperatorLogLimiter::new(2.0, 2);
        let t0 = Instant::now();
        assert!(matches!(
            limiter.admit_at("i", t0),
            Admission::Admitted { .. }
        ));
        assert!(matches!(
            limiter.admit_at("i", t0),
            Admission::Admitted { .. }
        ));
        assert_eq!(limiter.admit_at("i", t0), Admission::Refused);
        assert_eq!(
            limiter.admit_at("i", t0 + Duration::from_millis(500)),
            Admission::Admitted {
                suppressed_before: 1
            }
        );
        let off = OperatorLogLimiter::new(0.0, 1);
        for _ in 0..10_000 {
            assert!(matches!(off.admit_at("i", t0), Admission::Admitted { .. }));
        }
    }
}
