//! `palisade config`: check an operator configuration file, or print the default one.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration file: every problem is reported with the path of its key.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print the whole default configuration file, a comment on every key.
    Default,
}

pub(crate) fn config(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Check { file } => {
            crate::config::load(Some(&file))?;
            println!("{}: ok", file.display());
        }
        ConfigCommand::Default => print!("{}", crate::config::render_default()),
    }
    Ok(())
}
