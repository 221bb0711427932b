//! `palisade usage --tenant T [--from DAY] [--to DAY] [--json]`: what a tenant's installs
//! used per extension and UTC day (calls, fuel, egress bytes), the bytes each stores, and
//! the tenant's quotas; through the gateway's admin API with `--server`, else on the data
//! directory's registry and configuration.

use anyhow::{Result, anyhow};
use clap::Args;
use palisade_gateway::admin::{LimitsJson, UsageReport, usage_period, usage_report};

use crate::commands::admin_client::{AdminClient, ServerArgs};
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// First UTC day, `YYYY-MM-DD` (default: 29 days before `--to`).
    #[arg(long)]
    pub from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD` (default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// Print the report as the admin API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: ServerArgs,
}

pub(crate) async fn usage(data_dir: &DataDir, args: UsageArgs) -> Result<()> {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = usage_period(args.from.as_deref(), args.to.as_deref(), today)
        .map_err(|message| anyhow!(message))?;
    let report = match args.remote.client()? {
        Some(client) => remote(&client, &args).await?,
        None => {
            palisade_registry::install::validate_tenant_id(&args.tenant)?;
            let registry = data_dir.registry().await?;
            let quotas = data_dir.operator().quotas.to_quota_config();
            usage_report(&registry, &quotas, &args.tenant, from, to).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

async fn remote(client: &AdminClient, args: &UsageArgs) -> Result<UsageReport> {
    let mut query = Vec::new();
    query.extend(args.from.clone().map(|day| ("from", day)));
    query.extend(args.to.clone().map(|day| ("to", day)));
    client.usage(&args.tenant, &query).await
}

/// The report as a table: one line per extension and day, a total line per extension with
/// its stored bytes.
fn render(report: &UsageReport) -> String {
    let mut out = format!(
        "tenant `{}`, {} to {} (UTC days)\nquotas a day: tenant {}; each install {}\n",
        report.tenant_id,
        report.from,
        report.to,
        limits(&report.quotas.tenant),
        limits(&report.quotas.install),
    );
    if report.extensions.is_empty() {
        out.push_str("no usage in this period\n");
        return out;
    }
    let width = report
        .extensions
        .iter()
        .map(|e| e.extension_id.len())
        .max()
        .unwrap_or(0)
        .max("EXTENSION".len());
    out.push_str(&format!(
        "{:width$}  {:10}  {:>10}  {:>16}  {:>14}  {:>14}\n",
        "EXTENSION", "DAY", "CALLS", "FUEL", "EGRESS BYTES", "STORED BYTES"
    ));
    for extension in &report.extensions {
        for day in &extension.days {
            out.push_str(&format!(
                "{:width$}  {:10}  {:>10}  {:>16}  {:>14}  {:>14}\n",
                extension.extension_id,
                day.date.to_string(),
                day.usage.calls,
                day.usage.fuel,
                day.usage.egress_bytes,
                ""
            ));
        }
        out.push_str(&format!(
            "{:width$}  {:10}  {:>10}  {:>16}  {:>14}  {:>14}\n",
            extension.extension_id,
            "total",
            extension.total.calls,
            extension.total.fuel,
            extension.total.egress_bytes,
            extension.storage_bytes
        ));
    }
    out
}

fn limits(limits: &LimitsJson) -> String {
    let figures: Vec<String> = [
        ("calls", limits.calls),
        ("fuel", limits.fuel),
        ("egress bytes", limits.egress_bytes),
    ]
    .into_iter()
    .filter_map(|(name, limit)| limit.map(|limit| format!("{limit} {name}")))
    .collect();
    if figures.is_empty() {
        "unlimited".to_owned()
    } else {
        figures.join(", ")
    }
}
