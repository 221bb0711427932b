//! Structured logging into the operator's log and the execution log
//! (`palisade:extension/log`, granted by the manifest capability `log`, on by default).
//!
//! The host bounds message and field sizes and the number of lines per call; lines beyond
//! the bounds are dropped and counted, never an error.
//!
//! ```no_run
//! use palisade_sdk::log;
//!
//! log::info("order accepted");
//! log::write(log::Level::Warn, "slow upstream", &[("upstream", "billing"), ("ms", "950")]);
//! ```

#[cfg(not(palisade_fake_host))]
use crate::bindings::log::palisade::extension::log as wit;
#[cfg(palisade_fake_host)]
use crate::testing::log as wit;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// Writes one log line at `level` with key/value `fields`.
pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<wit::Field> = fields
        .iter()
        .map(|(key, value)| wit::Field {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    wit::write(level.into(), message, &fields);
}

/// Writes one line at [`Level::Trace`] without fields.
pub fn trace(message: &str) {
    write(Level::Trace, message, &[]);
}

/// Writes one line at [`Level::Debug`] without fields.
pub fn debug(message: &str) {
    write(Level::Debug, message, &[]);
}

/// Writes one line at [`Level::Info`] without fields.
pub fn info(message: &str) {
    write(Level::Info, message, &[]);
}

/// Writes one line at [`Level::Warn`] without fields.
pub fn warn(message: &str) {
    write(Level::Warn, message, &[]);
}

/// Writes one line at [`Level::Error`] without fields.
pub fn error(message: &str) {
    write(Level::Error, message, &[]);
}
