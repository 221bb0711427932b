//! `palisade logs EXT --tenant T [--follow] [--status 5xx]`: the execution log of one
//! extension, one line per call with the user and the trace id, the guest's log lines
//! indented below; through the gateway's admin API with `--server`, else on the data
//! directory's registry.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use palisade_registry::ExecutionRecord;
use palisade_registry::executions::{ExecutionFilter, MAX_RECENT_EXECUTIONS, status_filter};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::commands::admin_client::{AdminClient, ServerArgs};
use crate::datadir::DataDir;

/// How often `--follow` asks for new rows.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// How far back each `--follow` poll looks past the newest row it has shown. Rows are
/// written in batches after their calls end, so a row can appear with a time older than
/// one already shown; rows seen before are skipped by id.
const FOLLOW_OVERLAP_MS: i64 = 30_000;

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The extension id.
    pub extension: String,
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// Keep printing new calls as they are logged, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Only calls answered with this status (`503`) or status class (`5xx`).
    #[arg(long)]
    pub status: Option<String>,
    /// How many of the newest calls to print first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: ServerArgs,
}

/// Where the rows come from.
enum Source {
    Admin(AdminClient),
    Registry(palisade_registry::Registry),
}

impl Source {
    /// The newest rows (at most `limit`) at or after `since_ms`, newest first.
    async fn rows(
        &self,
        args: &LogsArgs,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionRecord>> {
        match self {
            Source::Admin(client) => {
                let mut query = vec![
                    ("extension", args.extension.clone()),
                    ("limit", limit.to_string()),
                ];
                query.extend(args.status.clone().map(|s| ("status", s)));
                query.extend(since_ms.map(|ms| ("since_ms", ms.to_string())));
                client.executions(&args.tenant, &query).await
            }
            Source::Registry(registry) => {
                let filter = ExecutionFilter {
                    extension_id: Some(args.extension.clone()),
                    status: args.status.as_deref().map(status_range).transpose()?,
                    since_ms,
                };
                Ok(registry.executions(&args.tenant, &filter, limit).await?)
            }
        }
    }
}

pub(crate) async fn logs(data_dir: &DataDir, args: LogsArgs) -> Result<()> {
    if !(1..=MAX_RECENT_EXECUTIONS).contains(&args.limit) {
        bail!(
            "--limit must be between 1 and {MAX_RECENT_EXECUTIONS}, not {}",
            args.limit
        );
    }
    if let Some(status) = &args.status {
        status_range(status)?;
    }
    let source = match args.remote.client()? {
        Some(client) => Source::Admin(client),
        None => Source::Registry(data_dir.registry().await?),
    };
    let mut rows = source.rows(&args, None, args.limit).await?;
    rows.reverse();
    if rows.is_empty() && !args.follow {
        println!(
            "no calls of `{}` by tenant `{}` are logged{}",
            args.extension,
            args.tenant,
            args.status
                .as_deref()
                .map(|s| format!(" with status {s}"))
                .unwrap_or_default()
        );
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut newest_ms = 0;
    for row in rows {
        print_row(&row);
        newest_ms = newest_ms.max(row.created_at_ms);
        seen.insert(row.id);
    }
    if !args.follow {
        return Ok(());
    }
    if newest_ms == 0 {
        newest_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    }
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let since = newest_ms - FOLLOW_OVERLAP_MS;
        let mut rows = source
            .rows(&args, Some(since), MAX_RECENT_EXECUTIONS)
            .await?;
        rows.reverse();
        let fresh: Vec<ExecutionRecord> = rows
            .into_iter()
            .filter(|row| !seen.contains(&row.id))
            .collect();
        for row in fresh {
            print_row(&row);
            newest_ms = newest_ms.max(row.created_at_ms);
            seen.insert(row.id);
        }
        // Forget what can no longer come back in a poll.
        if seen.len() > 4 * MAX_RECENT_EXECUTIONS as usize {
            seen.clear();
            let keep = source
                .rows(&args, Some(since), MAX_RECENT_EXECUTIONS)
                .await?;
            seen.extend(keep.into_iter().map(|row| row.id));
        }
    }
}

/// The statuses `--status` names.
fn status_range(text: &str) -> Result<std::ops::RangeInclusive<u16>> {
    status_filter(text).map_err(|err| anyhow::anyhow!("--status: {err}"))
}

/// One call as a line: time, status, outcome, duration, method and path, user, trace and
/// request id; the guest's log lines follow, indented.
fn print_row(row: &ExecutionRecord) {
    println!("{}", line(row));
    if let Some(excerpt) = &row.log_excerpt {
        for guest_line in excerpt.lines() {
            println!("    | {guest_line}");
        }
    }
}

fn line(row: &ExecutionRecord) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.created_at_ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| row.created_at_ms.to_string());
    let status = row
        .status
        .map_or_else(|| "---".to_owned(), |s| s.to_string());
    let what = if row.method.is_empty() {
        format!("{} {}", row.trigger, row.path)
    } else {
        format!("{} {}", row.method, row.path)
    };
    let mut line = format!(
        "{at} {status} {:<9} {:>6} ms  {what}  user={} trace={} request={}",
        row.outcome,
        row.duration_ms,
        row.user_id.as_deref().unwrap_or("-"),
        row.trace_id.as_deref().unwrap_or("-"),
        row.request_id,
    );
    if let Some(code) = &row.error_code {
        line.push_str(&format!(" error={code}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_user_trace_and_request() {
        let mut row = ExecutionRecord::new("req-1", "acme", "com.example.a", "http");
        row.created_at_ms = 1_796_000_000_123;
        row.method = "GET".into();
        row.path = "/items/{id}".into();
        row.status = Some(503);
        row.outcome = "error".into();
        row.duration_ms = 12;
        row.user_id = Some("ada".into());
        row.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        row.error_code = Some("runner_unavailable".into());
        assert_eq!(
            line(&row),
            "2026-11-30T00:53:20.123Z 503 error         12 ms  GET /items/{id}  user=ada \
             trace=4bf92f3577b34da6a3ce929d0e0e4736 request=req-1 error=runner_unavailable"
        );
        row.user_id = None;
        row.trace_id = None;
        row.method = String::new();
        row.trigger = "event".into();
        row.path = "/hooks/ticket".into();
        assert!(line(&row).contains("event /hooks/ticket  user=- trace=- request=req-1"));
    }
}
