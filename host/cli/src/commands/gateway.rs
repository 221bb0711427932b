//! `palisade gateway`: one gateway on the data directory in front of one or more runners,
//! stopping gracefully on SIGTERM or Ctrl-C (running calls finish first).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::commands::policy::PolicyArgs;
use crate::commands::serve::{gateway_state, stop_signal};
use crate::datadir::{DataDir, read_string};

#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// Address to serve the public API on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base URL of a runner, e.g. http://127.0.0.1:8081 (repeat for several).
    #[arg(long = "runner", value_name = "URL")]
    pub runners: Vec<String>,
    /// A file of runner base URLs, one per line (blank lines and `#` comments ignored).
    #[arg(long, value_name = "FILE")]
    pub runners_file: Option<PathBuf>,
    /// Milliseconds between two health checks of each runner (default: `[gateway]
    /// health_interval_ms` of the configuration file, 2000).
    #[arg(long)]
    pub health_interval_ms: Option<u64>,
    /// Request policy: caller keys, rate limit, CORS, idempotency.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Development only: accept caller tokens signed by the data directory's development
    /// key (`palisade token`) when no `--caller-key` or `--caller-jwks` is given. Without a
    /// caller key and without this flag the gateway refuses to start.
    #[arg(long, conflicts_with_all = ["caller_keys", "caller_jwks"])]
    pub dev: bool,
}

pub(crate) async fn gateway(data_dir: &DataDir, args: GatewayArgs) -> Result<()> {
    let mut runners = args.runners;
    if let Some(file) = &args.runners_file {
        runners.extend(read_runners_file(file)?);
    }
    if runners.is_empty() {
        bail!("no runner given: pass --runner URL (repeatable) or --runners-file FILE");
    }
    let configured = args
        .policy
        .over(&data_dir.operator().policy)?
        .has_caller_keys();
    check_caller_keys(configured, args.dev, data_dir)?;
    let registry = data_dir.registry().await?;
    let state = gateway_state(
        data_dir,
        registry,
        runners.clone(),
        args.health_interval_ms.map(Duration::from_millis),
        &args.policy,
        None,
        true,
    )?;
    let (state, _) = crate::commands::serve::with_admin(state, data_dir)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the gateway to {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the gateway's address")?;
    tracing::info!(%addr, ?runners, data_dir = %data_dir.root().display(), "gateway is up");
    println!(
        "gateway on http://{addr}, admin API on http://{addr}/admin/v1 (token in {}); SIGTERM or Ctrl-C stops",
        crate::commands::admin_client::admin_token_path(data_dir).display()
    );
    let state = Arc::new(state);
    axum::serve(
        crate::commands::no_delay(listener),
        palisade_gateway::app(Arc::clone(&state)),
    )
    .with_graceful_shutdown(stop_signal())
    .await
    .context("gateway server")?;
    // Execution-log rows are written in the background: write what is queued before exiting.
    state.flush_execution_log().await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Refuses to serve with nothing but the development caller key unless `dev`: whoever can
/// read the data directory (or run `palisade token` on it) could mint tokens for any
/// tenant. With `dev`, says so at start.
fn check_caller_keys(configured: bool, dev: bool, data_dir: &DataDir) -> Result<()> {
    let dev_key = data_dir.root().join("keys").join("caller-issuer.pub.pem");
    match (configured, dev) {
        (true, _) => Ok(()),
        (false, true) => {
            tracing::warn!(
                key = %dev_key.display(),
                "development mode (--dev): accepting caller tokens signed by the data \
                 directory's development key; anyone who can read the data directory can \
                 act as any tenant. Do not expose this gateway."
            );
            Ok(())
        }
        (false, false) => bail!(
            "no caller key is configured: pass --caller-key ALG:FILE or --caller-jwks FILE \
             with your identity provider's keys, or set `caller_keys` or `caller_jwks` in the \
             configuration file's [policy] (see docs/gateway.md), or pass --dev to accept \
             the development key {} (for development only)",
            dev_key.display()
        ),
    }
}

/// The runner URLs listed in `path`.
fn read_runners_file(path: &Path) -> Result<Vec<String>> {
    Ok(parse_runners(&read_string(path)?))
}

fn parse_runners(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicySection;

    #[test]
    fn only_the_development_key_needs_dev() {
        let data_dir = DataDir::new(PathBuf::from("/data"));
        let err = check_caller_keys(false, false, &data_dir).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("--dev") && text.contains("--caller-key") && text.contains("/data/keys"),
            "{text}"
        );
        check_caller_keys(false, true, &data_dir).unwrap();
        check_caller_keys(true, false, &data_dir).unwrap();
        let file = crate::config::parse("[policy]\ncaller_jwks = \"/keys/jwks.json\"\n")
            .unwrap()
            .policy;
        assert!(PolicyArgs::default().over(&file).unwrap().has_caller_keys());
        let flags = PolicyArgs {
            caller_keys: vec!["EdDSA:/keys/idp.pem".into()],
            ..PolicyArgs::default()
        };
        let policy = flags.over(&PolicySection::default()).unwrap();
        assert!(policy.has_caller_keys());
    }

    #[test]
    fn runners_files_skip_blanks_and_comments() {
        let text = "# runners\nhttp://a:1\n\n  http://b:2  \n#http://c:3\n";
        assert_eq!(parse_runners(text), ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn a_missing_runners_file_names_the_file() {
        let err = read_runners_file(Path::new("/nonexistent/runners.txt")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/runners.txt"),
            "{err:#}"
        );
    }
}
