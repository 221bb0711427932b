//! TLS on the execute hop, both ends: the runner's listener ([`TlsListener`], with client
//! certificates required when a client CA is configured) and the gateway's connector
//! ([`HopConnector`], which checks the runner's certificate against the configured CA and
//! presents its own when it has one).
//!
//! Certificates and keys are PEM files, read again when their contents change (checked
//! every [`RELOAD_INTERVAL`]): a renewed certificate is used by the next handshake without a
//! restart, and a file that does not load (half written, say) leaves the previous
//! configuration in place, with a warning. [`dev`] makes a development CA and certificates
//! signed by it (`palisade certs dev`).
//!
//! Everything uses rustls with the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1`.

mod client;
pub mod dev;
mod files;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{ClientTls, ClientTlsFiles, HopConnector, HopStream};
pub use server::{ServerTls, ServerTlsFiles, TlsListener};

/// How often the certificate and key files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Longest a TLS handshake may take on the runner's listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM block of the kind expected.
    #[error("{path} holds no {what} (a PEM `{what}` block is expected)")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for: `CERTIFICATE` or `PRIVATE KEY`.
        what: &'static str,
    },
    /// A file's PEM could not be parsed.
    #[error("{path} is not valid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificates, key and CA do not make a configuration (a key that does not
    /// match the certificate, a CA certificate that cannot be a trust anchor...).
    #[error("{what}: {reason}")]
    Config {
        /// Which files.
        what: String,
        /// What rustls said.
        reason: String,
    },
    /// A development certificate could not be made.
    #[error("making a development certificate: {0}")]
    Generate(String),
}

/// The crypto provider both ends use.
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// ALPN protocol of the hop.
const ALPN_HTTP1: &[u8] = b"http/1.1";

#[cfg(test)]
mod tests;
