//! `palisade secrets`: set, list and delete the sealed secrets of a tenant's install (in
//! the data directory, or through a gateway's admin API with `--server`), re-seal every
//! stored value to the keyring's primary key, and migrate values of earlier versions.
//! Also loads the keys: the runners' private keyring (generated on first use), and the
//! public key that gateways and `secrets set` seal with.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_registry::secrets::{LegacyKeyring, MAX_SECRET_VALUE_BYTES, SecretKey};
use palisade_registry::{SecretOpener, SecretSealer, SecretValue};
use zeroize::Zeroizing;

use crate::commands::admin_client::{AdminClient, ServerArgs};
use crate::datadir::{DataDir, read_string, write_file};

/// Environment variable holding the runners' private keyring (overrides the key file).
pub(crate) const KEYRING_ENV: &str = "PALISADE_SECRETS_KEYRING";

/// Environment variable holding the public key secrets are sealed to (overrides the file).
pub(crate) const PUBLIC_KEY_ENV: &str = "PALISADE_SECRETS_PUBLIC_KEY";

/// Environment variable of earlier versions' symmetric keyring (read to migrate only).
pub(crate) const LEGACY_KEY_ENV: &str = "PALISADE_SECRETS_KEY";

/// Header written above a generated keyring.
const KEYRING_HEADER: &str = "\
# Palisade secrets keyring (runners only): base64 X25519 private keys of 32 bytes, one
# per line. The first key's public half seals new values; the keys below it stay
# readable (rotation). Every stored secret is unreadable without its key: back this
# file up, and give it to runners only.
";

/// Header written above the public key.
const PUBLIC_KEY_HEADER: &str = "\
# Palisade secrets public key: base64 X25519 public key. Gateways and `palisade secrets
# set` seal values to it; it opens nothing. Written by runners from their keyring.
";

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
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
    /// Re-seal every stored secret to the keyring's primary (first) key, so that older
    /// keys can be removed from the keyring afterwards.
    Rotate,
    /// Re-seal every value an earlier version sealed with the symmetric keyring
    /// (`keys/secrets.key` or $PALISADE_SECRETS_KEY) to the public key, so that the
    /// symmetric keyring can be deleted.
    Migrate,
}

pub(crate) async fn secrets(data_dir: &DataDir, command: SecretsCommand) -> Result<()> {
    let remote = match &command {
        SecretsCommand::Set { remote, .. }
        | SecretsCommand::List { remote, .. }
        | SecretsCommand::Delete { remote, .. } => remote.client()?,
        SecretsCommand::Rotate | SecretsCommand::Migrate => None,
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
            let opener = load_opener(data_dir)?;
            reseal(&registry, &opener).await?;
        }
        SecretsCommand::Migrate => {
            let opener = load_opener(data_dir)?;
            let Some(legacy) = opener.legacy() else {
                bail!(
                    "nothing to migrate: no symmetric keyring of an earlier version (neither \
                     ${LEGACY_KEY_ENV} nor {})",
                    legacy_key_path(data_dir).display()
                );
            };
            let legacy_ids = legacy.key_ids();
            let remaining = reseal(&registry, &opener).await?;
            let left: u64 = legacy_ids.iter().filter_map(|id| remaining.get(id)).sum();
            if left > 0 {
                bail!(
                    "{left} secret(s) are still sealed with the symmetric keyring; run `palisade secrets migrate` again"
                );
            }
            println!(
                "every secret is sealed to the public key {}; delete {} (and unset ${LEGACY_KEY_ENV})",
                opener.primary_key_id(),
                legacy_key_path(data_dir).display()
            );
        }
    }
    Ok(())
}

/// Re-seals every value not sealed to `opener`'s primary key and reports; fails when a
/// value could not be re-sealed. Returns the values per key id afterwards.
async fn reseal(
    registry: &palisade_registry::Registry,
    opener: &SecretOpener,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let report = registry.reseal_secrets(opener).await?;
    println!(
        "re-sealed {} secret(s) to key {}",
        report.resealed,
        opener.primary_key_id()
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
    Ok(report.remaining)
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
        SecretsCommand::Rotate | SecretsCommand::Migrate => {
            bail!(
                "`secrets rotate` and `secrets migrate` work on the data directory only (they need the keyring)"
            )
        }
    }
    Ok(())
}

/// Path of the runners' private keyring.
pub(crate) fn keyring_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("keys").join("secrets.keyring")
}

/// Path of the public key secrets are sealed to.
pub(crate) fn public_key_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("keys").join("secrets.pub")
}

/// Path of the symmetric keyring of earlier versions.
pub(crate) fn legacy_key_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("keys").join("secrets.key")
}

fn env_text(name: &str) -> Option<SecretValue> {
    std::env::var(name)
        .ok()
        .filter(|text| !text.trim().is_empty())
        .map(SecretValue::new)
}

/// The runners' keyring, which opens secrets: `$PALISADE_SECRETS_KEYRING` if set, else
/// `keys/secrets.keyring`, generated (one fresh X25519 key, mode 0600) if it does not
/// exist. `keys/secrets.pub` is (re)written to the primary key's public half, so that
/// gateways and the CLI on this data directory seal to it. An earlier version's symmetric
/// keyring (`$PALISADE_SECRETS_KEY` or `keys/secrets.key`), when present, is added so that
/// values not migrated yet stay readable.
pub(crate) fn load_opener(data_dir: &DataDir) -> Result<SecretOpener> {
    let opener = opener_from(
        env_text(KEYRING_ENV).as_ref(),
        &keyring_path(data_dir),
        &public_key_path(data_dir),
    )?;
    Ok(match load_legacy(data_dir)? {
        Some(legacy) => {
            tracing::warn!(
                keys = ?legacy.key_ids(),
                "the symmetric secrets keyring of an earlier version is present: run \
                 `palisade secrets migrate`, then delete it (keys/secrets.key, ${LEGACY_KEY_ENV})"
            );
            opener.with_legacy(legacy)
        }
        None => opener,
    })
}

fn opener_from(from_env: Option<&SecretValue>, path: &Path, public: &Path) -> Result<SecretOpener> {
    let opener = if let Some(text) = from_env {
        SecretOpener::from_keyring(text.expose())
            .with_context(|| format!("reading the secrets keyring from ${KEYRING_ENV}"))?
    } else {
        if !path.exists() {
            generate_keyring(path)?;
        }
        warn_if_readable_by_others(path);
        let text = SecretValue::new(read_string(path)?);
        SecretOpener::from_keyring(text.expose())
            .with_context(|| format!("reading the secrets keyring {}", path.display()))?
    };
    write_public_key(public, opener.sealer())?;
    Ok(opener)
}

/// Writes `sealer`'s public key to `path` unless the file already holds it.
fn write_public_key(path: &Path, sealer: &SecretSealer) -> Result<()> {
    if let Ok(text) = std::fs::read_to_string(path)
        && SecretSealer::from_public_key(&text)
            .is_ok_and(|current| current.primary_key_id() == sealer.primary_key_id())
    {
        return Ok(());
    }
    let text = format!("{PUBLIC_KEY_HEADER}{}\n", sealer.public_key().to_base64());
    write_file(path, text.as_bytes())?;
    tracing::info!(path = %path.display(), key_id = sealer.primary_key_id(), "wrote the secrets public key");
    Ok(())
}

/// What seals secrets without opening them, for the gateway: `$PALISADE_SECRETS_PUBLIC_KEY`
/// if set, else `keys/secrets.pub`; `None` when neither exists. Never reads or generates
/// a key that opens secrets.
pub(crate) fn load_public_sealer(data_dir: &DataDir) -> Result<Option<SecretSealer>> {
    if let Some(text) = env_text(PUBLIC_KEY_ENV) {
        return SecretSealer::from_public_key(text.expose())
            .map(Some)
            .with_context(|| format!("reading the secrets public key from ${PUBLIC_KEY_ENV}"));
    }
    let path = public_key_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    SecretSealer::from_public_key(&read_string(&path)?)
        .map(Some)
        .with_context(|| format!("reading the secrets public key {}", path.display()))
}

/// What `palisade secrets set` seals with: the public key ([`load_public_sealer`]), or,
/// on a data directory without one, the public half of its keyring (generated on first
/// use, as a runner would).
pub(crate) fn load_sealer(data_dir: &DataDir) -> Result<SecretSealer> {
    match load_public_sealer(data_dir)? {
        Some(sealer) => Ok(sealer),
        None => Ok(load_opener(data_dir)?.sealer().clone()),
    }
}

/// The symmetric keyring of an earlier version, if one is configured.
fn load_legacy(data_dir: &DataDir) -> Result<Option<LegacyKeyring>> {
    if let Some(text) = env_text(LEGACY_KEY_ENV) {
        return LegacyKeyring::from_keyring(text.expose())
            .map(Some)
            .with_context(|| format!("reading the legacy secrets keyring from ${LEGACY_KEY_ENV}"));
    }
    let path = legacy_key_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    let text = SecretValue::new(read_string(&path)?);
    LegacyKeyring::from_keyring(text.expose())
        .map(Some)
        .with_context(|| format!("reading the legacy secrets keyring {}", path.display()))
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
    fn the_keyring_is_generated_once_with_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets.keyring");
        let public = dir.path().join("keys/secrets.pub");
        let first = opener_from(None, &path, &public).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Palisade secrets keyring"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealer =
            SecretSealer::from_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap();
        assert_eq!(sealer.primary_key_id(), first.primary_key_id());
        let second = opener_from(None, &path, &public).unwrap();
        assert_eq!(first.primary_key_id(), second.primary_key_id());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            2
        );
    }

    #[test]
    fn the_environment_wins_over_the_file_and_rewrites_the_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keyring");
        let public = dir.path().join("secrets.pub");
        let key = SecretKey::generate();
        let env = SecretValue::new(key.to_base64().as_str());
        let opener = opener_from(Some(&env), &path, &public).unwrap();
        assert_eq!(opener.primary_key_id(), key.id());
        assert!(
            !path.exists(),
            "no keyring is generated when the env var is set"
        );
        let written = std::fs::read_to_string(&public).unwrap();
        assert_eq!(
            SecretSealer::from_public_key(&written)
                .unwrap()
                .primary_key_id(),
            key.id()
        );

        let bad = SecretValue::new("not a key");
        let err = format!("{:#}", opener_from(Some(&bad), &path, &public).unwrap_err());
        assert!(err.contains(KEYRING_ENV), "{err}");
        assert!(!err.contains("not a key"), "{err}");
    }

    #[test]
    fn a_broken_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keyring");
        std::fs::write(&path, "# empty\n").unwrap();
        let err = format!(
            "{:#}",
            opener_from(None, &path, &dir.path().join("secrets.pub")).unwrap_err()
        );
        assert!(
            err.contains("secrets.keyring") && err.contains("no key"),
            "{err}"
        );
    }

    #[test]
    fn a_gateway_reads_the_public_key_and_never_generates_one() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path().to_owned());
        assert!(load_public_sealer(&data_dir).unwrap().is_none());
        assert!(!dir.path().join("keys").exists(), "nothing was generated");
        let opener = load_opener(&data_dir).unwrap();
        let sealer = load_public_sealer(&data_dir).unwrap().unwrap();
        assert_eq!(sealer.primary_key_id(), opener.primary_key_id());
        let sealed = sealer
            .seal("install-1", "TOKEN", &SecretValue::new("v"))
            .unwrap();
        assert_eq!(
            opener.open("install-1", "TOKEN", &sealed).unwrap().expose(),
            "v"
        );
    }
}
