//! `palisade certs dev`: a development CA with a runner certificate and a gateway client
//! certificate signed by it, for TLS (and mutual TLS) on the gateway → runner hop.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::datadir::{write_file, write_private};

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Write a development CA (`ca.pem`, `ca.key`), a runner certificate
    /// (`runner.pem`, `runner.key`) and a gateway client certificate (`gateway.pem`,
    /// `gateway.key`) into a directory. For development and tests: use your own PKI in
    /// production.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// A DNS name or IP address the runner certificate is valid for (repeatable; default:
    /// localhost and 127.0.0.1). Gateways must reach runners by one of these.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Overwrite files already in the directory.
    #[arg(long)]
    pub force: bool,
}

const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "runner.pem",
    "runner.key",
    "gateway.pem",
    "gateway.key",
];

pub(crate) fn certs(command: CertsCommand) -> Result<()> {
    match command {
        CertsCommand::Dev(args) => dev(args),
    }
}

fn dev(args: DevArgs) -> Result<()> {
    let hosts = if args.hosts.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        args.hosts
    };
    if !args.force
        && let Some(existing) = FILES
            .iter()
            .map(|name| args.out.join(name))
            .find(|path| path.exists())
    {
        bail!("{} exists; pass --force to overwrite", existing.display());
    }
    let certs = palisade_protocol::tls::dev::generate(&hosts)
        .context("making the development certificates")?;
    let out = &args.out;
    write_file(&out.join("ca.pem"), certs.ca.cert.as_bytes())?;
    write_private(&out.join("ca.key"), &certs.ca.key)?;
    write_file(&out.join("runner.pem"), certs.runner.cert.as_bytes())?;
    write_private(&out.join("runner.key"), &certs.runner.key)?;
    write_file(&out.join("gateway.pem"), certs.gateway.cert.as_bytes())?;
    write_private(&out.join("gateway.key"), &certs.gateway.key)?;
    let dir = out.display();
    println!(
        "development CA and certificates in {dir} (runner valid for {}; {} days)",
        hosts.join(", "),
        palisade_protocol::tls::dev::VALIDITY_DAYS
    );
    println!();
    println!("[runner]");
    println!("tls_cert = \"{dir}/runner.pem\"");
    println!("tls_key = \"{dir}/runner.key\"");
    println!(
        "tls_client_ca = \"{dir}/ca.pem\"   # mutual TLS: gateways must present a certificate"
    );
    println!();
    println!("[gateway]");
    println!("runner_tls_ca = \"{dir}/ca.pem\"");
    println!("runner_tls_cert = \"{dir}/gateway.pem\"");
    println!("runner_tls_key = \"{dir}/gateway.key\"");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_six_files_and_refuses_to_overwrite_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let args = || DevArgs {
            out: out.clone(),
            hosts: vec!["runner-0.runners".to_owned(), "10.0.0.7".to_owned()],
            force: false,
        };
        dev(args()).unwrap();
        for name in FILES {
            let text = std::fs::read_to_string(out.join(name)).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{name}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("runner.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The runner's files load as a server with mutual TLS, the gateway's as a client.
        palisade_protocol::tls::ServerTls::load(&palisade_protocol::tls::ServerTlsFiles {
            cert: out.join("runner.pem"),
            key: out.join("runner.key"),
            client_ca: Some(out.join("ca.pem")),
        })
        .unwrap();
        palisade_protocol::tls::ClientTls::load(&palisade_protocol::tls::ClientTlsFiles {
            ca: out.join("ca.pem"),
            cert: Some(out.join("gateway.pem")),
            key: Some(out.join("gateway.key")),
        })
        .unwrap();

        let error = dev(args()).unwrap_err().to_string();
        assert!(error.contains("ca.pem exists"), "{error}");
        dev(DevArgs {
            force: true,
            ..args()
        })
        .unwrap();
    }
}
