//! The gateway's end: a connector for hyper's client that speaks TLS to `https://` runners.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::files::{Contents, Reloading};
use super::{ALPN_HTTP1, TlsError, provider};

/// The files of a TLS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates (PEM) the server's certificate must chain to. Only these are
    /// trusted: the system's roots are not.
    pub ca: PathBuf,
    /// The client's certificate chain (PEM, leaf first), presented to servers that ask
    /// for one (mutual TLS); with `key`.
    pub cert: Option<PathBuf>,
    /// The client's private key (PEM); with `cert`.
    pub key: Option<PathBuf>,
}

/// A client configuration, reloaded when its files change.
#[derive(Clone)]
pub struct ClientTls {
    config: Reloading<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads `files`; an error names the file and what is wrong with it (a certificate
    /// without its key, or the reverse, is one). Inside a Tokio runtime, the files are
    /// watched from then on.
    pub fn load(files: &ClientTlsFiles) -> Result<Self, TlsError> {
        let mut paths = vec![files.ca.clone()];
        match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => paths.extend([cert.clone(), key.clone()]),
            (None, None) => {}
            (Some(path), None) | (None, Some(path)) => {
                return Err(TlsError::Config {
                    what: path.display().to_string(),
                    reason: "a client certificate and its key go together: set both or neither"
                        .to_owned(),
                });
            }
        }
        let files = files.clone();
        let config = Reloading::load("runner TLS client", paths, move |contents| {
            build(&files, contents)
        })?;
        Ok(ClientTls { config })
    }

    /// The configuration as last loaded.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }
}

fn build(files: &ClientTlsFiles, contents: &Contents) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in contents.certificates(&files.ca)? {
        roots.add(cert).map_err(|e| TlsError::Config {
            what: format!("CA {}", files.ca.display()),
            reason: e.to_string(),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: "protocol versions".to_owned(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(contents.certificates(cert)?, contents.private_key(key)?)
            .map_err(|e| TlsError::Config {
                what: format!(
                    "client certificate {} with key {}",
                    cert.display(),
                    key.display()
                ),
                reason: e.to_string(),
            })?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Connects hyper's client to runners: plain TCP for `http://`, TLS for `https://` (the
/// runner's certificate must name the URL's host, a DNS name or an IP address).
#[derive(Debug, Clone)]
pub struct HopConnector {
    tcp: HttpConnector,
    tls: Option<ClientTls>,
}

impl HopConnector {
    /// A connector over `tcp` (its timeouts and `TCP_NODELAY` apply), with TLS when `tls`
    /// is given; without it, an `https://` URL fails to connect.
    pub fn new(mut tcp: HttpConnector, tls: Option<ClientTls>) -> Self {
        tcp.enforce_http(false);
        HopConnector { tcp, tls }
    }
}

/// Why a connection to a runner could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection failed.
    #[error("connecting: {0}")]
    Tcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An `https://` URL without a TLS configuration, or a URL without a host.
    #[error("{0}")]
    Url(String),
    /// The TLS handshake failed (the runner's certificate not trusted or not naming the
    /// host, a client certificate refused...).
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
}

impl tower_service::Service<Uri> for HopConnector {
    type Response = HopStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<HopStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp
            .poll_ready(cx)
            .map_err(|e| ConnectError::Tcp(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let secure = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = self.tls.clone();
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let tcp = connecting
                .await
                .map_err(|e| ConnectError::Tcp(Box::new(e)))?;
            if !secure {
                return Ok(HopStream::Plain(tcp));
            }
            let tls = tls.ok_or_else(|| {
                ConnectError::Url("an https:// runner needs a TLS configuration".to_owned())
            })?;
            let host = host.ok_or_else(|| ConnectError::Url("no host in the URL".to_owned()))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Url(format!("host `{host}`: {e}")))?;
            let stream = TlsConnector::from(tls.config())
                .connect(name, tcp.into_inner())
                .await
                .map_err(ConnectError::Handshake)?;
            Ok(HopStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to a runner.
#[derive(Debug)]
pub enum HopStream {
    /// Plain TCP.
    Plain(TokioIo<TcpStream>),
    /// TLS over TCP.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for HopStream {
    fn connected(&self) -> Connected {
        match self {
            HopStream::Plain(tcp) => tcp.connected(),
            HopStream::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for HopStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            HopStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for HopStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            HopStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            HopStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            HopStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            HopStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            HopStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            HopStream::Plain(tcp) => tcp.is_write_vectored(),
            HopStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            HopStream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            HopStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}
