//! `palisade secrets`: set, list and delete the sealed secrets of a tenant's install (in
//! the data directory, or through a gateway's admin API with `--server`), and re-seal
//! every stored value under the keyring's primary key. Also loads the operator's
//! keyring for `up` (generating it on first use).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_registry::secrets::{MAX_SECRET_VALUE_BYTES, SecretKey};
use palisade_registry::{SecretSealer, SecretValue};
use zeroize::Zeroizing;

use crate::commands::admin_client::{AdminClient, ServerArgs};
use crate::datadir::{DataDir, read_string};

/// Environment variable holding the keyring (overrides the key file).
pub const KEY_ENV: &str = "PALISADE_SECRETS_KEY";

/// Header written above a generated key.
const KEYRING_HEADER: &str = "\
# Palisade secrets keyring: base64 keys of 32 bytes, one per line.
# The first key seals new values; the keys below it stay readable (rotation).
# Every stored secret is unreadable without its key: back this file up.
";

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a secret of a tenant's install. The value is read from stdin; one trailing
    /// newline is removed.
    Set {
        /// The tenant owning the install.
        #[arg(long)]
        tenant: String,
        /// The extension id.
        extension: String,
        /// The secret's name, as the manifest's `capabilities.secrets` lists it.
        name: String,
        #[command(flatten)]
        remote: ServerArgs,
    },
    /// List the names of the secrets set for a tenant's install (never the values).
    List {
        /// The tenant owning the install.
        #[arg(long)]
        tenant: String,
        /// The extension id.
        extension: String,
        #[command(flatten)]
        remote: ServerArgs,
    },
    /// Delete a secret of a tenant's install.
    Delete {
        /// The tenant owning the install.
        #[arg(long)]
        tenant: String,
        /// The extension id.
        extension: String,
        /// The secret's name.
        name: String,
        #[command(flatten)]
        remote: ServerArgs,
    },
    /// Re-seal every stored secret with the keyring's primary (first) key, so that older
    /// keys can be removed from the keyring afterwards.
    Rotate,
}

pub async fn secrets(data_dir: &DataDir, command: SecretsCommand) -> Result<()> {
    let remote = match &command {
        SecretsCommand::Set { remote, .. }
        | SecretsCommand::List { remote, .. }
        | SecretsCommand::Delete { remote, .. } => remote.client()?,
        SecretsCommand::Rotate => None,
    };
    if let Some(client) = remote {
        return remote_secrets(&client, command).await;
    }
    let registry = data_dir.registry().await?;
    match command {
        SecretsCommand::Set {
            tenant,
            extension,
            name,
            ..
        } => {
            registry
                .check_secret_name(&tenant, &extension, &name)
                .await?;
            let sealer = load_sealer(data_dir)?;
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading the value of `{name}` from stdin; finish with Ctrl-D \
                     (pipe it in to keep it off the screen)"
                );
            }
            let value = read_value(std::io::stdin().lock())?;
            registry
                .set_secret(&sealer, &tenant, &extension, &name, &value)
                .await?;
            println!(
                "secret `{name}` set for tenant `{tenant}`'s install of {extension} (sealed with key {})",
                sealer.primary_key_id()
            );
        }
        SecretsCommand::List {
            tenant, extension, ..
        } => {
            let listed = registry.list_secrets(&tenant, &extension).await?;
            if listed.is_empty() {
                eprintln!("no secrets are set for tenant `{tenant}`'s install of {extension}");
            }
            let mut out = std::io::stdout().lock();
            for secret in listed {
                writeln!(out, "{}", secret.name)?;
            }
        }
        SecretsCommand::Delete {
            tenant,
            extension,
            name,
            ..
        } => {
            registry.delete_secret(&tenant, &extension, &name).await?;
            println!("secret `{name}` deleted from tenant `{tenant}`'s install of {extension}");
        }
        SecretsCommand::Rotate => {
            let sealer = load_sealer(data_dir)?;
            let report = registry.reseal_secrets(&sealer).await?;
            println!(
                "re-sealed {} secret(s) with key {}",
                report.resealed,
                sealer.primary_key_id()
            );
            if report.skipped > 0 {
                println!(
                    "{} secret(s) changed while re-sealing; run `palisade secrets rotate` again",
                    report.skipped
                );
            }
            for (install_id, name, reason) in &report.failed {
                eprintln!("cannot re-seal `{name}` of install {install_id}: {reason}");
            }
            for (key_id, count) in &report.remaining {
                println!("key {key_id}: {count} secret(s)");
            }
            if !report.failed.is_empty() {
                bail!(
                    "{} secret(s) could not be re-sealed; keep their keys in the keyring",
                    report.failed.len()
                );
            }
        }
    }
    Ok(())
}

/// `secrets set|list|delete` through a gateway's admin API.
async fn remote_secrets(client: &AdminClient, command: SecretsCommand) -> Result<()> {
    match command {
        SecretsCommand::Set {
            tenant,
            extension,
            name,
            ..
        } => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "reading the value of `{name}` from stdin; finish with Ctrl-D \
                     (pipe it in to keep it off the screen)"
                );
            }
            let value = read_value(std::io::stdin().lock())?;
            client
                .set_secret(&tenant, &extension, &name, value.expose())
                .await?;
            println!("secret `{name}` set for tenant `{tenant}`'s install of {extension}");
        }
        SecretsCommand::List {
            tenant, extension, ..
        } => {
            let listed = client.list_secrets(&tenant, &extension).await?;
            if listed.is_empty() {
                eprintln!("no secrets are set for tenant `{tenant}`'s install of {extension}");
            }
            let mut out = std::io::stdout().lock();
            for secret in listed {
                writeln!(out, "{}", secret.name)?;
            }
        }
        SecretsCommand::Delete {
            tenant,
            extension,
            name,
            ..
        } => {
            client.delete_secret(&tenant, &extension, &name).await?;
            println!("secret `{name}` deleted from tenant `{tenant}`'s install of {extension}");
        }
        SecretsCommand::Rotate => {
            bail!("`secrets rotate` works on the data directory only (it needs the keyring)")
        }
    }
    Ok(())
}

/// The operator's keyring: `$PALISADE_SECRETS_KEY` if set, else `keys/secrets.key` in the
/// data directory, generated (with one fresh key) if it does not exist.
pub fn load_sealer(data_dir: &DataDir) -> Result<SecretSealer> {
    let from_env = std::env::var(KEY_ENV)
        .ok()
        .filter(|text| !text.trim().is_empty())
        .map(SecretValue::new);
    sealer_from(from_env.as_ref(), &key_path(data_dir))
}

fn key_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("keys").join("secrets.key")
}

fn sealer_from(from_env: Option<&SecretValue>, path: &Path) -> Result<SecretSealer> {
    if let Some(text) = from_env {
        return SecretSealer::from_keyring(text.expose())
            .with_context(|| format!("reading the secrets keyring from ${KEY_ENV}"));
    }
    if !path.exists() {
        generate_keyring(path)?;
    }
    warn_if_readable_by_others(path);
    let text = SecretValue::new(read_string(path)?);
    SecretSealer::from_keyring(text.expose())
        .with_context(|| format!("reading the secrets keyring {}", path.display()))
}

/// Writes a keyring with one fresh key to `path`, unless a file appears there first.
fn generate_keyring(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = SecretKey::generate();
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a key file in {}", dir.display()))?;
    file.write_all(KEYRING_HEADER.as_bytes())
        .and_then(|()| file.write_all(key.to_base64().as_bytes()))
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing a key file in {}", dir.display()))?;
    match file.persist_noclobber(path) {
        Ok(_) => {
            tracing::info!(path = %path.display(), key_id = %key.id(), "generated the secrets keyring");
            Ok(())
        }
        // Another process created it meanwhile: use theirs.
        Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err.error).with_context(|| format!("writing {}", path.display())),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the secrets keyring is readable by other users; restrict it with `chmod 600`"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Reads a secret value: UTF-8, at most [`MAX_SECRET_VALUE_BYTES`] after removing one
/// trailing newline (`\n` or `\r\n`).
fn read_value(input: impl Read) -> Result<SecretValue> {
    let limit = MAX_SECRET_VALUE_BYTES + 2;
    let mut bytes = Zeroizing::new(Vec::new());
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the secret value from stdin")?;
    if bytes.len() > limit {
        bail!("the secret value on stdin exceeds {MAX_SECRET_VALUE_BYTES} bytes");
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!("the secret value on stdin is not UTF-8 text");
    };
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    Ok(SecretValue::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_removed() {
        for (input, expected) in [
            ("token\n", "token"),
            ("token\r\n", "token"),
            ("token", "token"),
            ("token\n\n", "token\n"),
            ("two\nlines\n", "two\nlines"),
        ] {
            assert_eq!(read_value(input.as_bytes()).unwrap().expose(), expected);
        }
    }

    #[test]
    fn oversized_and_binary_values_are_refused_without_echo() {
        let big = "x".repeat(MAX_SECRET_VALUE_BYTES + 3);
        let err = read_value(big.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
        let err = read_value(&[0xff, 0xfe][..]).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
        // The largest value plus a newline is fine.
        let max = format!("{}\r\n", "y".repeat(MAX_SECRET_VALUE_BYTES));
        assert_eq!(
            read_value(max.as_bytes()).unwrap().len(),
            MAX_SECRET_VALUE_BYTES
        );
    }

    #[test]
    fn the_key_file_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets.key");
        let first = sealer_from(None, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Palisade secrets keyring"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = sealer_from(None, &path).unwrap();
        assert_eq!(first.primary_key_id(), second.primary_key_id());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let key = SecretKey::generate();
        let env = SecretValue::new(key.to_base64().as_str());
        let sealer = sealer_from(Some(&env), &path).unwrap();
        assert_eq!(sealer.primary_key_id(), key.id());
        assert!(
            !path.exists(),
            "no file is generated when the env var is set"
        );

        let bad = SecretValue::new("not a key");
        let err = format!("{:#}", sealer_from(Some(&bad), &path).unwrap_err());
        assert!(err.contains(KEY_ENV), "{err}");
        assert!(!err.contains("not a key"), "{err}");
    }

    #[test]
    fn a_broken_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        std::fs::write(&path, "# empty\n").unwrap();
        let err = format!("{:#}", sealer_from(None, &path).unwrap_err());
        assert!(
            err.contains("secrets.key") && err.contains("no key"),
            "{err}"
        );
    }
}
