//! Registry and operator commands: trust, publish, install, token, call. They work on the
//! embedded registry in `--data-dir`; publish and install also work against a remote
//! gateway's admin API with `--server URL`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use palisade_bundle::{CapabilityKey, KeyFingerprint, PublicKey};
use palisade_registry::Registry;

use crate::commands::admin_client::ServerArgs;
use crate::commands::author::default_signature_path;
use crate::datadir::{DEV_AUDIENCE, DEV_ISSUER, DataDir, read_bytes};

#[derive(Debug, Subcommand)]
pub(crate) enum TrustCommand {
    /// Trust a publisher's public key (PEM) in the registry; running gateways and runners
    /// accept it within their trust-cache TTL, without a restart.
    Add {
        /// The public key file.
        key: PathBuf,
        /// Also allow the key to sign new versions of this extension id, which belongs to
        /// the key of its first publish (or reserve a new id for the key). Repeatable.
        #[arg(long = "extension", value_name = "ID")]
        extensions: Vec<String>,
    },
    /// Stop trusting a key (bundles signed only by it stop being installed and run), or with
    /// `--extension`, only withdraw it from those extension ids.
    Remove {
        /// The key's fingerprint (`sha256:<hex>`, as `trust list` prints it) or its public
        /// key file.
        key: String,
        /// Withdraw the key from this extension id only; it stays trusted. Repeatable.
        #[arg(long = "extension", value_name = "ID")]
        extensions: Vec<String>,
    },
    /// List the trusted keys, and the keys allowed per extension id.
    List,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The bundle (`bundle.tar.zst`).
    pub bundle: PathBuf,
    /// Its signature (default: `<bundle>.sig`).
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Also compile the component now and store its precompiled artifact, signed with the
    /// artifact signing key (`keys/artifact-signing.key.pem`, generated on first use), so
    /// that the first call on runners trusting that key does not pay compile time.
    #[arg(long, conflicts_with = "server")]
    pub precompile: bool,
    #[command(flatten)]
    pub remote: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The tenant installing the extension.
    #[arg(long)]
    pub tenant: String,
    /// The extension id.
    pub extension: String,
    /// The version to install (default: the newest).
    #[arg(long)]
    pub version: Option<semver::Version>,
    /// Capabilities the tenant approves, comma separated (`log,storage,...`); every
    /// capability the manifest requests must be approved.
    #[arg(long, value_delimiter = ',')]
    pub approve: Vec<String>,
    /// Non-secret configuration of the install, `key=value`, repeatable. (`--config` is
    /// the operator configuration file, as for every command.)
    #[arg(long = "set", id = "set", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Approve an upgrade to `--version` that grants more than the installed version (new
    /// storage namespaces, secret names or HTTP origins).
    #[arg(long, requires = "version")]
    pub approve_widened_grant: bool,
    #[command(flatten)]
    pub remote: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The tenant the token is for.
    #[arg(long)]
    pub tenant: String,
    /// The user (`sub` claim).
    #[arg(long, default_value = "dev")]
    pub user: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The tenant calling.
    #[arg(long)]
    pub tenant: String,
    /// The extension id.
    pub extension: String,
    /// The path inside the extension, e.g. `/hello/ada`.
    pub path: String,
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(short, long)]
    pub data: Option<String>,
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// The calling user (the token's `sub`), which the extension sees in its context.
    #[arg(long, default_value = "dev")]
    pub user: String,
}

pub(crate) async fn trust(data_dir: &DataDir, cmd: TrustCommand) -> Result<()> {
    let registry = data_dir.registry().await?;
    match cmd {
        TrustCommand::Add { key, extensions } => {
            let pem = read_bytes(&key)?;
            let public = PublicKey::from_pem(&pem)
                .with_context(|| format!("reading the public key {}", key.display()))?;
            let fingerprint = public.fingerprint();
            if registry.trust_key(&public).await? {
                println!("trusted {fingerprint}");
            } else {
                println!("{fingerprint} was already trusted");
            }
            for extension in &extensions {
                registry
                    .allow_signer(extension, &fingerprint)
                    .await
                    .with_context(|| format!("allowing {fingerprint} for {extension}"))?;
                println!("allowed {fingerprint} to sign {extension}");
            }
        }
        TrustCommand::Remove { key, extensions } => {
            let fingerprint = key_fingerprint(&key)?;
            if extensions.is_empty() {
                if registry.untrust_key(&fingerprint).await? {
                    println!("{fingerprint} is no longer trusted");
                } else {
                    bail!("{fingerprint} is not a trusted key (see `palisade trust list`)");
                }
            }
            for extension in &extensions {
                let removed = registry
                    .disallow_signer(extension, &fingerprint)
                    .await
                    .with_context(|| format!("withdrawing {fingerprint} from {extension}"))?;
                if removed {
                    println!("{fingerprint} may no longer sign {extension}");
                } else {
                    println!("{fingerprint} was not allowed to sign {extension}");
                }
            }
        }
        TrustCommand::List => {
            for trusted in registry.trusted_keys().await? {
                println!(
                    "{} {}",
                    trusted.key.fingerprint().as_str(),
                    trusted.key.algorithm().as_str()
                );
            }
            for signer in registry.all_extension_signers().await? {
                println!(
                    "{} signed by {} ({})",
                    signer.extension_id, signer.fingerprint, signer.source
                );
            }
        }
    }
    Ok(())
}

/// A key named by its `sha256:<hex>` fingerprint or by its public key file.
fn key_fingerprint(key: &str) -> Result<KeyFingerprint> {
    if key.starts_with("sha256:") {
        return Ok(key.parse::<KeyFingerprint>()?);
    }
    let path = PathBuf::from(key);
    let public = PublicKey::from_pem(&read_bytes(&path)?)
        .with_context(|| format!("reading the public key {}", path.display()))?;
    Ok(public.fingerprint())
}

/// Trusts `key` in the registry (and leaves any other trusted key alone).
pub(crate) async fn add_trusted_key(registry: &Registry, key: &PublicKey) -> Result<()> {
    registry
        .trust_key(key)
        .await
        .context("trusting the publisher key")?;
    Ok(())
}

pub(crate) async fn publish(data_dir: &DataDir, args: PublishArgs) -> Result<()> {
    if let Some(client) = args.remote.client()? {
        let bundle = read_bytes(&args.bundle)?;
        let sig_path = args
            .signature
            .unwrap_or_else(|| default_signature_path(&args.bundle));
        let signature = read_bytes(&sig_path)?;
        let step = crate::progress::Step::start(format!("publishing {}", args.bundle.display()));
        let published = client
            .publish(bundle, &signature)
            .await
            .with_context(|| format!("publishing {}", args.bundle.display()))?;
        drop(step);
        println!(
            "published {}@{} ({}) as version {}",
            published.extension_id, published.version, published.content_hash, published.version_id
        );
        return Ok(());
    }
    let bundle = read_bytes(&args.bundle)?;
    let sig_path = args
        .signature
        .unwrap_or_else(|| default_signature_path(&args.bundle));
    let signature = read_bytes(&sig_path)?;
    let registry = data_dir.registry().await?;
    let trust = registry
        .trust_set()
        .await
        .context("reading the registry's trusted publisher keys")?;
    let step = crate::progress::Step::start(format!("publishing {}", args.bundle.display()));
    let published = registry
        .publish(&bundle, &signature, &trust)
        .await
        .with_context(|| format!("publishing {}", args.bundle.display()))?;
    drop(step);
    println!(
        "published {}@{} ({}) as version {}",
        published.extension_id, published.version, published.content_hash, published.version_id
    );
    if args.precompile {
        let component = palisade_bundle::unpack(&bundle, &palisade_bundle::UnpackLimits::default())
            .context("unpacking the bundle to precompile it")?
            .component;
        let services = palisade_runtime::HostServices {
            artifacts: Some(data_dir.signing_artifacts(&registry)?),
            ..Default::default()
        };
        let runtime = palisade_runtime::Runtime::new(data_dir.operator().runtime.clone(), services)
            .context("starting the wasm engine")?;
        let step = crate::progress::Step::start("compiling the component");
        runtime
            .precompile(&published.content_hash.to_string(), component)
            .await
            .context("precompiling the component")?;
        drop(step);
        println!(
            "signed precompiled artifact stored for {}",
            published.content_hash
        );
    }
    Ok(())
}

pub(crate) async fn install(data_dir: &DataDir, args: InstallArgs) -> Result<()> {
    let approved = args
        .approve
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<CapabilityKey>()
                .map_err(|e| anyhow::anyhow!("--approve: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = config_pairs(&args.config)?;
    if let Some(client) = args.remote.client()? {
        let names: Vec<String> = approved.iter().map(|k| k.as_str().to_owned()).collect();
        let install = client
            .install(
                &args.tenant,
                &args.extension,
                args.version.as_ref(),
                &names,
                &config,
                args.approve_widened_grant,
            )
            .await
            .with_context(|| format!("installing {} for {}", args.extension, args.tenant))?;
        println!(
            "installed {}@{} for tenant {} (install {})",
            install.extension_id, install.version, install.tenant_id, install.install_id
        );
        return Ok(());
    }
    let registry = data_dir.registry().await?;
    let install = registry
        .install_with(
            &args.tenant,
            &args.extension,
            args.version.as_ref(),
            &approved,
            config,
            args.approve_widened_grant,
        )
        .await
        .with_context(|| format!("installing {} for {}", args.extension, args.tenant))?;
    println!(
        "installed {}@{} for tenant {} (install {})",
        install.extension_id, install.version, install.tenant_id, install.install_id
    );
    Ok(())
}

/// The install configuration of `--set KEY=VALUE` options.
pub(crate) fn config_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut config = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--set `{pair}`: expected KEY=VALUE");
        };
        config.insert(k.to_owned(), v.to_owned());
    }
    Ok(config)
}

/// A development caller token for `tenant`, signed with the data directory's issuer key.
pub(crate) fn dev_token(
    data_dir: &DataDir,
    tenant: &str,
    user: &str,
    ttl: Duration,
) -> Result<String> {
    let keys = data_dir.caller_issuer_keys()?;
    palisade_gateway::auth::mint_dev_token(
        keys.private_pem.as_bytes(),
        DEV_ISSUER,
        DEV_AUDIENCE,
        tenant,
        user,
        ttl,
    )
    .context("minting a caller token")
}

pub(crate) fn token(data_dir: &DataDir, args: TokenArgs) -> Result<()> {
    println!(
        "{}",
        dev_token(
            data_dir,
            &args.tenant,
            &args.user,
            Duration::from_secs(args.ttl)
        )?
    );
    Ok(())
}

pub(crate) async fn call(data_dir: &DataDir, args: CallArgs) -> Result<()> {
    let token = dev_token(data_dir, &args.tenant, &args.user, Duration::from_secs(300))?;
    let path = args.path.trim_start_matches('/');
    let url = format!(
        "{}/api/ext/{}/{}",
        args.gateway.trim_end_matches('/'),
        args.extension,
        path
    );
    let method = reqwest::Method::from_bytes(args.method.as_bytes())
        .with_context(|| format!("--method `{}` is not an HTTP method", args.method))?;
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(data) = args.data {
        request = request.body(data);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.text().await.context("reading the response")?;
    eprintln!("{status} (request {request_id})");
    println!("{body}");
    if !status.is_success() {
        bail!("the call answered {status}");
    }
    Ok(())
}
