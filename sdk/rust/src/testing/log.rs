//! The fake of `palisade:extension/log`: lines are kept for
//! [`TestHost::logs`](super::TestHost::logs).

pub(crate) use crate::bindings::log::palisade::extension::log::{Field, Level};

use super::{not_granted, with_state};

/// One line the handler logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: crate::log::Level,
    /// The message.
    pub message: String,
    /// Key/value fields, in the order given.
    pub fields: Vec<(String, String)>,
}

pub(crate) fn write(level: Level, message: &str, fields: &[Field]) {
    with_state("log::write", |state| {
        if !state.grants.log {
            not_granted("palisade:extension/log", "log");
        }
        let level = match level {
            Level::Trace => crate::log::Level::Trace,
            Level::Debug => crate::log::Level::Debug,
            Level::Info => crate::log::Level::Info,
            Level::Warn => crate::log::Level::Warn,
            Level::Error => crate::log::Level::Error,
        };
        state.logs.push(LogLine {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|field| (field.key.clone(), field.value.clone()))
                .collect(),
        });
    });
}
