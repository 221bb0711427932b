//! `palisade:extension/log`: structured log lines from the guest, bounded per call, written
//! to the operator's log with the invocation's identifiers and kept for the execution log.
//! Captured stdout/stderr lines end up here too.

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::palisade::extension::log::{self, Field, Level};
use crate::state::InstanceState;

/// Bound on fields per line and on each key/value's length.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 1024;

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`; `stdout`/`stderr` for captured output.
    pub level: &'static str,
    /// The message, cut to the configured bound.
    pub message: String,
    /// Key/value fields, bounded in number and size.
    pub fields: Vec<(String, String)>,
}

/// Per-call state of the log capability.
#[derive(Debug)]
pub struct LogState {
    lines: Vec<LogLine>,
    dropped: u64,
    max_lines: usize,
    max_message_bytes: usize,
    span: tracing::Span,
}

impl LogState {
    /// Prepares the state for one call; lines are also emitted inside `span`.
    pub fn prepare(max_lines: usize, max_message_bytes: usize, span: tracing::Span) -> Self {
        LogState {
            lines: Vec::new(),
            dropped: 0,
            max_lines,
            max_message_bytes,
            span,
        }
    }

    /// Records one line, or counts it as dropped past the bound.
    pub fn push(&mut self, level: &'static str, message: &str, fields: Vec<(String, String)>) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        let message = truncate(message, self.max_message_bytes);
        let _entered = self.span.enter();
        match level {
            "error" | "stderr" => tracing::error!(target: "guest", level, ?fields, "{message}"),
            "warn" => tracing::warn!(target: "guest", level, ?fields, "{message}"),
            "debug" | "trace" => tracing::debug!(target: "guest", level, ?fields, "{message}"),
            _ => tracing::info!(target: "guest", level, ?fields, "{message}"),
        }
        self.lines.push(LogLine {
            level,
            message,
            fields,
        });
    }

    /// Adds captured output, one line per text line.
    pub fn push_output(&mut self, level: &'static str, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            if !line.trim().is_empty() {
                self.push(level, line, Vec::new());
            }
        }
    }

    /// The lines kept and the number dropped.
    pub fn finish(self) -> (Vec<LogLine>, u64) {
        (self.lines, self.dropped)
    }
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

struct LogCapability;

impl HasData for LogCapability {
    type Data<'a> = &'a mut LogState;
}

/// Links `palisade:extension/log`.
pub fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, LogCapability>(linker, |s| &mut s.log)
}

impl log::Host for LogState {
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
        self.push(level, &message, fields);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_counted() {
        let mut state = LogState::prepare(2, 5, tracing::Span::none());
        state.push("info", "hello world", vec![]);
        state.push("info", "two", vec![]);
        state.push("info", "three", vec![]);
        let (lines, dropped) = state.finish();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "hello…");
        assert_eq!(dropped, 1);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
