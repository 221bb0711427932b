//! Rounds of `wrk` figures per subject, their medians and spread, and Markdown tables.

use std::time::Duration;

use anyhow::Result;

use crate::setup::Bench;
use crate::wrk::{self, Figures, Target};

/// One thing measured, and its figures per round.
pub(crate) struct Subject {
    pub label: String,
    pub target: Target,
    pub rounds: Vec<Figures>,
}

impl Subject {
    pub(crate) fn new(label: impl Into<String>, target: Target) -> Subject {
        Subject {
            label: label.into(),
            target,
            rounds: Vec::new(),
        }
    }

    pub(crate) fn rps(&self) -> Spread {
        Spread::of(self.rounds.iter().map(|f| f.rps))
    }

    pub(crate) fn p50(&self) -> Spread {
        Spread::of(self.rounds.iter().map(|f| f.p50.as_secs_f64()))
    }

    pub(crate) fn p99(&self) -> Spread {
        Spread::of(self.rounds.iter().map(|f| f.p99.as_secs_f64()))
    }

    /// Socket errors over all rounds.
    pub(crate) fn socket_errors(&self) -> u64 {
        self.rounds.iter().map(|f| f.socket_errors).sum()
    }

    /// Requests per second relative to `other`: of the medians, and the range of the
    /// per-round ratios (each round measures both within a few seconds).
    pub(crate) fn rps_ratio(&self, other: &Subject) -> (f64, Spread) {
        let per_round = self
            .rounds
            .iter()
            .zip(&other.rounds)
            .map(|(a, b)| a.rps / b.rps);
        (
            self.rps().median / other.rps().median,
            Spread::of(per_round),
        )
    }
}

/// Warms every subject up, then measures them in `rounds` rounds, each round running every
/// subject once, starting one further along each round so no subject always goes first.
pub(crate) async fn measure(bench: &Bench, subjects: &mut [Subject]) -> Result<()> {
    let settings = &bench.settings;
    for subject in subjects.iter() {
        eprintln!("load bench:   warming up {}", subject.label);
        wrk::run(
            &bench.wrk,
            bench.work.path(),
            &subject.target,
            settings.warmup_load(),
        )
        .await
        .map_err(|e| e.context(format!("{} (warm-up)", subject.label)))?;
    }
    let count = subjects.len();
    for round in 0..settings.rounds {
        for offset in 0..count {
            let subject = &mut subjects[(round + offset) % count];
            let figures = wrk::run(
                &bench.wrk,
                bench.work.path(),
                &subject.target,
                settings.load(),
            )
            .await
            .map_err(|e| e.context(format!("{} (round {})", subject.label, round + 1)))?;
            eprintln!(
                "load bench:   round {} {}: {:.0} req/s, p50 {}, p99 {}",
                round + 1,
                subject.label,
                figures.rps,
                latency(figures.p50.as_secs_f64()),
                latency(figures.p99.as_secs_f64())
            );
            subject.rounds.push(figures);
        }
    }
    Ok(())
}

/// Median, minimum and maximum of some samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(samples: impl Iterator<Item = f64>) -> Spread {
        let mut samples: Vec<f64> = samples.collect();
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => samples[n / 2],
            _ => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: samples.first().copied().unwrap_or(f64::NAN),
            max: samples.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `median (min–max)` with `format` applied to each.
    pub(crate) fn show(&self, format: fn(f64) -> String) -> String {
        format!(
            "{} ({}–{})",
            format(self.median),
            format(self.min),
            format(self.max)
        )
    }
}

/// A count or rate, rounded, with thousands separators.
pub(crate) fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in seconds as µs or ms.
pub(crate) fn latency(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.2} s", secs)
    }
}

/// A ratio such as `2.31×`.
pub(crate) fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// A duration as `12.3 s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Bytes as MiB.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes as KiB.
pub(crate) fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

/// A Markdown table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        headers.join(" | "),
        "---|".repeat(headers.len())
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// The per-subject table: throughput, p50 and p99, medians with (min–max).
pub(crate) fn subjects_table(subjects: &[Subject]) -> String {
    let rows: Vec<Vec<String>> = subjects
        .iter()
        .map(|s| {
            vec![
                s.label.clone(),
                s.rps().show(count),
                s.p50().show(latency),
                s.p99().show(latency),
            ]
        })
        .collect();
    let mut out = table(&["subject", "req/s", "p50", "p99"], &rows);
    let errors: Vec<String> = subjects
        .iter()
        .filter(|s| s.socket_errors() > 0)
        .map(|s| format!("{}: {}", s.label, s.socket_errors()))
        .collect();
    if !errors.is_empty() {
        out.push_str(&format!(
            "\nSocket errors reported by wrk: {}.\n",
            errors.join(", ")
        ));
    }
    out
}

/// A ratio against a target (`at_least`), met or not.
pub(crate) fn verdict(value: f64, at_least: f64) -> &'static str {
    if value >= at_least { "met" } else { "not met" }
}
