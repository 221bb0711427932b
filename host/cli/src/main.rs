//! `palisade`: the command line for extension authors (build, pack, sign, publish) and
//! operators (up, install, token, call). Argument parsing and wiring only; the work is done
//! by the host crates.

mod commands;
mod config;
mod datadir;
mod progress;
mod telemetry;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the request path allocates many small,
/// short-lived buffers (headers, JSON, per-call state), where glibc's malloc showed up at
/// a fifth of the gateway's profile. See docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Palisade: signed WebAssembly extensions, installed per tenant, run in isolation.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about)]
struct Cli {
    /// Where the embedded registry, object store and keys live.
    #[arg(
        long,
        global = true,
        env = "PALISADE_DATA_DIR",
        default_value = ".palisade"
    )]
    data_dir: PathBuf,
    /// Registry database instead of `registry.db` in the data directory:
    /// `postgres://user@host:5432/db` (optionally `?options=-c%20search_path%3Dschema`) or
    /// `sqlite:///path/registry.db`. Runners and gateways of one platform share it.
    #[arg(long, global = true, env = "PALISADE_DATABASE_URL")]
    database_url: Option<String>,
    /// Object store for bundles, signatures and precompiled artifacts instead of `objects/`
    /// in the data directory: `s3://bucket` or `s3://bucket/prefix` (endpoint, region and
    /// credentials from `[registry]` and the standard `AWS_*` variables). Every node of a
    /// platform shares it.
    #[arg(long, global = true, env = "PALISADE_OBJECT_STORE")]
    object_store: Option<String>,
    /// Operator configuration file (TOML): `[runtime]`, `[storage]`, `[runner]`, `[gateway]`,
    /// `[policy]`, `[registry]`; `palisade config default` prints every key.
    #[arg(long, global = true, env = "PALISADE_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an extension crate from a template (http, storage, ui).
    New(commands::new::NewArgs),
    /// Build an extension crate for wasm32-wasip2 and print the component's path.
    Build(commands::author::BuildArgs),
    /// Generate a publisher signing key pair (ECDSA P-256, PEM).
    Keygen(commands::author::KeygenArgs),
    /// Pack a reproducible bundle.tar.zst from a manifest directory and a component.
    Pack(commands::author::PackArgs),
    /// Sign a bundle (writes a base64 signature, as `cosign sign-blob` does).
    Sign(commands::author::SignArgs),
    /// Verify a bundle's signature against a trust bundle.
    Verify(commands::author::VerifyArgs),
    /// Manage the publisher keys the registry trusts.
    #[command(subcommand)]
    Trust(commands::registry::TrustCommand),
    /// Publish a signed bundle to the registry.
    Publish(commands::registry::PublishArgs),
    /// Install an extension for a tenant, approving the capabilities it requests.
    Install(commands::registry::InstallArgs),
    /// Uninstall an extension for a tenant (its storage, secrets and counters go with it).
    Uninstall(commands::installs::InstallRef),
    /// Serve calls of a tenant's install again.
    Enable(commands::installs::InstallRef),
    /// Stop serving calls of a tenant's install (its data is kept).
    Disable(commands::installs::InstallRef),
    /// List a tenant's installs.
    Installs(commands::installs::InstallsArgs),
    /// List the published versions of an extension, newest first.
    Versions(commands::installs::VersionsArgs),
    /// Mint a development caller token (JWT) for a tenant.
    Token(commands::registry::TokenArgs),
    /// Call an installed extension through the gateway.
    Call(commands::registry::CallArgs),
    /// Run registry, runner and gateway in one process on the embedded defaults.
    Up(commands::up::UpArgs),
    /// Serve an extension crate on a local platform while it is edited: rebuilt, published
    /// and installed for a dev tenant on every change, its log lines on the terminal.
    #[command(
        after_help = "Its data directory is DIR/target/palisade-dev unless --data-dir is given on \
                      the command line (PALISADE_DATA_DIR, PALISADE_DATABASE_URL and \
                      PALISADE_OBJECT_STORE are not read; --database-url and --object-store are \
                      refused). See docs/dev.md."
    )]
    Dev(commands::dev::DevArgs),
    /// Run one runner (the execute protocol); drains gracefully on SIGTERM or Ctrl-C.
    Runner(commands::runner::RunnerArgs),
    /// Deliver events only (no calls served); any number may run beside runners.
    Dispatcher(commands::runner::DispatcherArgs),
    /// Print an extension's execution log: one line per call, with user and trace id.
    Logs(commands::logs::LogsArgs),
    /// Copy a single-machine platform (SQLite registry and objects) onto PostgreSQL and the
    /// object store of `--object-store`.
    Migrate(commands::migrate::MigrateArgs),
    /// Create or upgrade the registry database's schema, then exit (a deployment's
    /// migration job, run before new gateways and runners start).
    Schema,
    /// Print a tenant's usage per extension and UTC day, beside its quotas.
    Usage(commands::usage::UsageArgs),
    /// Publish events and follow their deliveries.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// Issue scoped admin credentials (e.g. for publishing events only).
    #[command(subcommand)]
    Credentials(commands::credentials::CredentialsCommand),
    /// Run one gateway (the public API) in front of one or more runners.
    Gateway(commands::gateway::GatewayArgs),
    /// Manage the sealed secrets of tenants' installs.
    #[command(subcommand)]
    Secrets(commands::secrets::SecretsCommand),
    /// Check an operator configuration file, or print the default one.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Make certificates for TLS between gateways and runners.
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
    /// Print a shell completion script (e.g. `palisade completions bash > /etc/bash_completion.d/palisade`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.format(&mut Cli::command()).exit(),
    };
    // `dev` keeps a data directory of its own unless one is named on its command line.
    let data_dir_given =
        matches.value_source("data_dir") == Some(clap::parser::ValueSource::CommandLine);
    // `config check` reads its own file, even when the global one is broken.
    let command = match cli.command {
        Command::Config(command) => {
            let _telemetry = telemetry::init(cli.log_json, &Default::default(), "cli").ok();
            return exit(commands::config::config(command));
        }
        Command::Certs(command) => {
            let _telemetry = telemetry::init(cli.log_json, &Default::default(), "cli").ok();
            return exit(commands::certs::certs(command));
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "palisade",
                &mut std::io::stdout(),
            );
            return std::process::ExitCode::SUCCESS;
        }
        command => command,
    };
    let operator = match config::load(cli.config.as_deref()) {
        Ok(operator) => operator,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Command::Dev(args) = command {
        // The guest's log lines go to the terminal, the process's own log only from WARN
        // (unless RUST_LOG says otherwise).
        let _telemetry = match telemetry::init_dev(
            cli.log_json,
            &operator.telemetry,
            commands::dev::GuestLines::stdout(),
        ) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: {err:#}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let given =
            |name: &str| matches.value_source(name) == Some(clap::parser::ValueSource::CommandLine);
        if given("database_url") || given("object_store") {
            eprintln!(
                "error: dev runs on its own embedded registry in its data directory: drop --database-url and --object-store"
            );
            return std::process::ExitCode::FAILURE;
        }
        let data_dir = data_dir_given.then_some(cli.data_dir);
        return exit(commands::dev::dev(args, data_dir, operator).await);
    }
    // Held to the end of `main`, which flushes the spans not yet exported.
    let _telemetry = match telemetry::init(cli.log_json, &operator.telemetry, role(&command)) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let data_dir = datadir::DataDir::new(cli.data_dir)
        .with_operator_config(operator)
        .with_database_url(cli.database_url)
        .with_object_store(cli.object_store);
    let result = match command {
        Command::New(args) => commands::new::new(args),
        Command::Build(args) => commands::author::build(args),
        Command::Keygen(args) => commands::author::keygen(args),
        Command::Pack(args) => commands::author::pack(args),
        Command::Sign(args) => commands::author::sign(args),
        Command::Verify(args) => commands::author::verify(&data_dir, args).await,
        Command::Trust(cmd) => commands::registry::trust(&data_dir, cmd).await,
        Command::Publish(args) => commands::registry::publish(&data_dir, args).await,
        Command::Install(args) => commands::registry::install(&data_dir, args).await,
        Command::Uninstall(args) => commands::installs::uninstall(&data_dir, args).await,
        Command::Enable(args) => commands::installs::set_enabled(&data_dir, args, true).await,
        Command::Disable(args) => commands::installs::set_enabled(&data_dir, args, false).await,
        Command::Installs(args) => commands::installs::installs(&data_dir, args).await,
        Command::Versions(args) => commands::installs::versions(&data_dir, args).await,
        Command::Token(args) => commands::registry::token(&data_dir, args),
        Command::Call(args) => commands::registry::call(&data_dir, args).await,
        Command::Up(args) => commands::up::up(&data_dir, args).await,
        Command::Dev(_) => unreachable!("dev is run above"),
        Command::Runner(args) => commands::runner::runner(&data_dir, args).await,
        Command::Dispatcher(args) => commands::runner::dispatcher(&data_dir, args).await,
        Command::Logs(args) => commands::logs::logs(&data_dir, args).await,
        Command::Usage(args) => commands::usage::usage(&data_dir, args).await,
        Command::Migrate(args) => commands::migrate::migrate(&data_dir, args).await,
        Command::Schema => commands::migrate::schema(&data_dir).await,
        Command::Events(command) => commands::events::events(&data_dir, command).await,
        Command::Credentials(command) => {
            commands::credentials::credentials(&data_dir, command).await
        }
        Command::Gateway(args) => commands::gateway::gateway(&data_dir, args).await,
        Command::Secrets(cmd) => commands::secrets::secrets(&data_dir, cmd).await,
        Command::Config(command) => commands::config::config(command),
        Command::Certs(command) => commands::certs::certs(command),
        Command::Completions { .. } => Ok(()),
    };
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The process's role, in the default service name of its exported spans.
fn role(command: &Command) -> &'static str {
    match command {
        Command::Up(_) => "up",
        Command::Gateway(_) => "gateway",
        Command::Runner(_) => "runner",
        Command::Dispatcher(_) => "dispatcher",
        _ => "cli",
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_takes_the_gateways_request_policy() {
        let cli = Cli::try_parse_from(["palisade", "up", "--rate-per-second", "0"]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.policy.rate_per_second, Some(0.0));
    }

    #[test]
    fn dev_takes_a_crate_its_listen_address_and_install_settings() {
        let cli = Cli::try_parse_from([
            "palisade",
            "dev",
            "my-ext",
            "--listen",
            "127.0.0.1:0",
            "--set",
            "greeting=hi",
            "--tenant",
            "acme",
        ])
        .unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.dir, std::path::Path::new("my-ext"));
        assert_eq!(args.gateway_addr.port(), 0);
        assert_eq!(args.config, ["greeting=hi"]);
        assert_eq!(args.tenant, "acme");
        // Without arguments: the current directory, beside `up`'s default port.
        let cli = Cli::try_parse_from(["palisade", "dev"]).unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.dir, std::path::Path::new("."));
        assert_eq!(args.gateway_addr.to_string(), "127.0.0.1:8090");
        assert_eq!(args.tenant, "dev");
    }

    #[test]
    fn install_settings_and_the_operator_file_are_different_options() {
        let cli = Cli::try_parse_from([
            "palisade",
            "install",
            "--tenant",
            "acme",
            "com.example.hello",
            "--set",
            "greeting=hi",
            "--config",
            "palisade.toml",
        ])
        .unwrap();
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("palisade.toml"))
        );
        let Command::Install(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.config, ["greeting=hi"]);
    }
}
