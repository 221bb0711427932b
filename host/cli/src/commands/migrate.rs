//! `palisade migrate --to postgres://… [--from sqlite:///path/registry.db]`: copies a
//! single-machine platform (its SQLite registry and its objects) onto PostgreSQL and the
//! object store of `--object-store` (or `[registry] object_store`).
//!
//! `palisade schema`: brings the registry database's schema up to date and exits, for a
//! deployment's migration job.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_registry::{ObjectStoreConfig, Registry, RegistryConfig};

use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The registry to copy: a `sqlite:` URL (default: `registry.db` in the data
    /// directory).
    #[arg(long)]
    pub from: Option<String>,
    /// The source's object directory (default: `objects/` beside the source database).
    #[arg(long)]
    pub from_objects: Option<PathBuf>,
    /// The registry to copy into: a `postgres://` URL of an empty database (or schema,
    /// with `?options=-c%20search_path%3Dschema`), created and migrated first.
    #[arg(long)]
    pub to: String,
}

pub(crate) async fn migrate(data_dir: &DataDir, args: MigrateArgs) -> Result<()> {
    let from = args
        .from
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.root().join("registry.db").display()));
    let Some(path) = from.strip_prefix("sqlite://") else {
        bail!("--from must be a `sqlite://` URL of the registry to copy, not `{from}`");
    };
    let path = Path::new(path.split('?').next().unwrap_or(path));
    if !path.is_file() {
        bail!("--from: no registry database at {}", path.display());
    }
    let objects = args.from_objects.unwrap_or_else(|| {
        path.parent()
            .unwrap_or_else(|| Path::new("."))
            .join("objects")
    });
    if !args.to.starts_with("postgres://") && !args.to.starts_with("postgresql://") {
        bail!("--to must be a `postgres://` URL, not `{}`", args.to);
    }
    let source = Registry::open(&RegistryConfig {
        database_url: from.clone(),
        objects: ObjectStoreConfig::Local(objects),
    })
    .await
    .with_context(|| format!("opening the source registry {}", path.display()))?;
    let target = data_dir
        .clone()
        .with_database_url(Some(args.to))
        .registry()
        .await
        .context("opening the target registry")?;
    let report = source
        .copy_into(&target)
        .await
        .context("copying the registry")?;
    for (table, rows) in &report.rows {
        println!("{table:<32} {rows:>10} rows");
    }
    println!(
        "{:<32} {:>10} copied to {}",
        "objects",
        report.objects,
        target.objects().location()
    );
    println!("done: point every runner and gateway at the new database and object store");
    Ok(())
}

/// `palisade schema`: opens the registry (`--database-url`, `--object-store`), which
/// applies the migrations it lacks, checks that it answers, and exits.
pub(crate) async fn schema(data_dir: &DataDir) -> Result<()> {
    let registry = data_dir.registry().await?;
    let readiness = registry.readiness().await;
    if !readiness.is_ready() {
        bail!(
            "the registry's schema is current, but the registry is not ready: {}",
            serde_json::to_string(&readiness).unwrap_or_default()
        );
    }
    println!("registry schema is current");
    Ok(())
}
