//! `palisade credentials add|list|remove`: scoped admin credentials on the data directory's
//! registry. A credential of scope `events` may publish events (`POST /admin/v1/events`),
//! one of scope `metrics` may scrape a gateway's `GET /metrics`; neither may do anything
//! else, so that a host application or a scraper need not hold the admin token.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use palisade_registry::CredentialScope;

use crate::datadir::DataDir;

#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Make a credential; its token is printed once and not kept.
    Add(AddArgs),
    /// List the credentials (never their tokens).
    List,
    /// Remove a credential; gateways refuse it within seconds.
    Remove {
        /// The credential's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// A name for it, e.g. the application that will hold it.
    pub name: String,
    /// What it may do.
    #[arg(long, value_parser = ["events", "metrics"])]
    pub scope: String,
}

pub(crate) async fn credentials(data_dir: &DataDir, command: CredentialsCommand) -> Result<()> {
    let registry = data_dir.registry().await?;
    match command {
        CredentialsCommand::Add(args) => {
            let scope: CredentialScope = args.scope.parse().map_err(anyhow::Error::msg)?;
            let token = registry.add_credential(&args.name, scope).await?;
            eprintln!(
                "credential `{}` (scope {}); its token, shown this once:",
                args.name,
                scope.as_str()
            );
            println!("{token}");
        }
        CredentialsCommand::List => {
            let credentials = registry.list_credentials().await?;
            if credentials.is_empty() {
                println!("no credentials");
            }
            for credential in credentials {
                println!("{}  scope {}", credential.name, credential.scope.as_str());
            }
        }
        CredentialsCommand::Remove { name } => {
            if !registry.remove_credential(&name).await? {
                bail!("there is no credential named `{name}`");
            }
            println!("removed credential `{name}`");
        }
    }
    Ok(())
}
