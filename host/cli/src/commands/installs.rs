//! `palisade installs`, `versions`, `uninstall`, `enable` and `disable`: reading and
//! changing installs, on the data directory's registry or, with `--server`, through the
//! gateway's admin API.

use anyhow::{Result, bail};
use clap::Args;

use crate::commands::admin_client::{InstallReply, ServerArgs, VersionReply};
use crate::datadir::DataDir;

/// One tenant's install of one extension.
#[derive(Debug, Args)]
pub(crate) struct InstallRef {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The extension id.
    pub extension: String,
    #[command(flatten)]
    pub remote: ServerArgs,
}

/// `palisade installs`.
#[derive(Debug, Args)]
pub(crate) struct InstallsArgs {
    /// The tenant whose installs are listed.
    #[arg(long)]
    pub tenant: String,
    #[command(flatten)]
    pub remote: ServerArgs,
}

/// `palisade versions`.
#[derive(Debug, Args)]
pub(crate) struct VersionsArgs {
    /// The extension id.
    pub extension: String,
    #[command(flatten)]
    pub remote: ServerArgs,
}

/// `palisade uninstall`: removes the install with its storage, secrets and counters.
pub(crate) async fn uninstall(data_dir: &DataDir, args: InstallRef) -> Result<()> {
    let removed = match args.remote.client()? {
        Some(client) => {
            client.uninstall(&args.tenant, &args.extension).await?;
            true
        }
        None => {
            let registry = data_dir.registry().await?;
            registry.uninstall(&args.tenant, &args.extension).await?
        }
    };
    if !removed {
        bail!(
            "tenant `{}` has no install of {}",
            args.tenant,
            args.extension
        );
    }
    println!(
        "uninstalled {} for tenant `{}`",
        args.extension, args.tenant
    );
    Ok(())
}

/// `palisade enable` and `palisade disable`.
pub(crate) async fn set_enabled(data_dir: &DataDir, args: InstallRef, enabled: bool) -> Result<()> {
    let found = match args.remote.client()? {
        Some(client) => {
            client
                .set_enabled(&args.tenant, &args.extension, enabled)
                .await?;
            true
        }
        None => {
            let registry = data_dir.registry().await?;
            registry
                .set_enabled(&args.tenant, &args.extension, enabled)
                .await?
        }
    };
    if !found {
        bail!(
            "tenant `{}` has no install of {}",
            args.tenant,
            args.extension
        );
    }
    let state = if enabled { "enabled" } else { "disabled" };
    println!("{state} {} for tenant `{}`", args.extension, args.tenant);
    Ok(())
}

/// `palisade installs --tenant T`.
pub(crate) async fn installs(data_dir: &DataDir, args: InstallsArgs) -> Result<()> {
    let installs: Vec<InstallReply> = match args.remote.client()? {
        Some(client) => client.installs(&args.tenant).await?,
        None => {
            let registry = data_dir.registry().await?;
            registry
                .list_installs(&args.tenant)
                .await?
                .into_iter()
                .map(|i| InstallReply {
                    install_id: i.install_id,
                    tenant_id: i.tenant_id,
                    extension_id: i.extension_id,
                    version: i.version,
                    content_hash: i.content_hash.to_string(),
                    enabled: i.enabled,
                    approved: i.approved.iter().map(|k| k.as_str().to_owned()).collect(),
                })
                .collect()
        }
    };
    if installs.is_empty() {
        println!("tenant `{}` has no installs", args.tenant);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = installs
        .into_iter()
        .map(|i| {
            [
                i.extension_id,
                i.version,
                if i.enabled { "enabled" } else { "disabled" }.to_owned(),
                i.approved.join(","),
                i.content_hash,
                i.install_id,
            ]
        })
        .collect();
    print_table(
        [
            "EXTENSION",
            "VERSION",
            "STATE",
            "APPROVED",
            "CONTENT HASH",
            "INSTALL",
        ],
        &rows,
    );
    Ok(())
}

/// `palisade versions EXT`.
pub(crate) async fn versions(data_dir: &DataDir, args: VersionsArgs) -> Result<()> {
    let versions: Vec<VersionReply> = match args.remote.client()? {
        Some(client) => client.versions(&args.extension).await?,
        None => {
            let registry = data_dir.registry().await?;
            registry
                .list_versions(&args.extension)
                .await?
                .into_iter()
                .map(|v| VersionReply {
                    version: v.version,
                    content_hash: v.content_hash.to_string(),
                    requested: v.requested.iter().map(|k| k.as_str().to_owned()).collect(),
                    published_at_ms: v.published_at_ms,
                })
                .collect()
        }
    };
    if versions.is_empty() {
        bail!("{} is not published", args.extension);
    }
    let rows: Vec<[String; 4]> = versions
        .into_iter()
        .map(|v| {
            [
                v.version,
                v.content_hash,
                v.requested.join(","),
                published(v.published_at_ms),
            ]
        })
        .collect();
    print_table(
        ["VERSION", "CONTENT HASH", "REQUESTS", "PUBLISHED (UTC)"],
        &rows,
    );
    Ok(())
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS`.
fn published(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Prints `rows` under `header`, each column as wide as its widest cell.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_times_are_utc_dates() {
        assert_eq!(published(0), "1970-01-01 00:00:00");
        assert_eq!(published(1_796_626_362_000), "2026-12-07 06:52:42");
    }
}
