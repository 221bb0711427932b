//! When a manifest's schedule fires: a five-field cron expression in UTC (computed with
//! the `croner` crate, after [`check_cron`](super::cron::check_cron) has named any fault),
//! or `@every N` with `s`, `m` or `h` for a fixed interval of at least a second.
//!
//! Slots are exact instants: a cron slot is a whole minute, an `@every` slot a multiple of
//! the interval since the Unix epoch. So every process computes the same slots, and a slot
//! can be fired once however many dispatchers look at it.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum ScheduleSpec {
    /// A five-field cron expression, in UTC.
    Cron(Box<croner::Cron>),
    /// A fixed interval (`@every 30s`).
    Every(Duration),
}

impl ScheduleSpec {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<ScheduleSpec, String> {
        if let Some(rest) = text.strip_prefix("@every") {
            return every(rest.trim()).map(ScheduleSpec::Every);
        }
        super::cron::check_cron(text)?;
        croner::Cron::from_str(text)
            .map(|cron| ScheduleSpec::Cron(Box::new(cron)))
            .map_err(|e| format!("not a cron expression this platform can run: {e}"))
    }

    /// The first slot strictly after `after_ms` (Unix milliseconds), if there is one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            ScheduleSpec::Every(interval) => {
                let step = i64::try_from(interval.as_millis()).ok()?.max(1);
                after_ms.div_euclid(step).checked_add(1)?.checked_mul(step)
            }
            ScheduleSpec::Cron(cron) => {
                let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|at| at.timestamp_millis())
            }
        }
    }
}

/// `N` followed by `s`, `m` or `h`: at least one second.
fn every(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`@every {text}` is not an interval like `@every 30s`, `@every 5m` or `@every 2h`")
    };
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        _ => return Err(bad()),
    };
    let count: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("an `@every` interval must be at least 1s".to_owned());
    }
    count
        .checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn every_fires_on_multiples_of_its_interval() {
        let spec = ScheduleSpec::parse("@every 30s").unwrap();
        assert_eq!(spec.next_after(0), Some(30_000));
        assert_eq!(spec.next_after(29_999), Some(30_000));
        assert_eq!(spec.next_after(30_000), Some(60_000));
        let spec = ScheduleSpec::parse("@every 2h").unwrap();
        assert_eq!(spec.next_after(1), Some(2 * 3600 * 1000));
    }

    #[test]
    fn cron_fires_on_its_minutes_in_utc() {
        // 2025-12-07T12:34:56Z
        let at = 1_765_110_896_000;
        let spec = ScheduleSpec::parse("*/15 * * * *").unwrap();
        let next = spec.next_after(at).unwrap();
        assert_eq!(next % (15 * MINUTE), 0, "{next}");
        assert!(next > at && next - at <= 15 * MINUTE);
        let daily = ScheduleSpec::parse("0 3 * * *").unwrap();
        let next = daily.next_after(at).unwrap();
        assert_eq!(
            DateTime::<Utc>::from_timestamp_millis(next)
                .unwrap()
                .to_rfc3339(),
            "2025-12-08T03:00:00+00:00"
        );
    }

    #[test]
    fn every_expression_the_manifest_check_accepts_can_run() {
        for text in [
            "0 * * * *",
            "*/15 * * * *",
            "0 9-17 * * MON-FRI",
            "30 2 1,15 * *",
            "0 0 1 jan *",
            "0 0 * * 7",
            "5-55/10 * * * *",
        ] {
            let spec = ScheduleSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(spec.next_after(0).is_some(), "{text}");
        }
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, needle) in [
            ("@every 0s", "at least 1s"),
            ("@every 10", "not an interval"),
            ("@every s", "not an interval"),
            ("@every 5d", "not an interval"),
            ("@hourly", "5 fields"),
            ("61 * * * *", "minute field"),
        ] {
            let err = ScheduleSpec::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
