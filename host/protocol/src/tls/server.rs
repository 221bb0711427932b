//! The runner's end: a listener whose connections are TLS, handshaken off the accept loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::server::TlsStream;

use super::files::{Contents, Reloading};
use super::{ALPN_HTTP1, HANDSHAKE_TIMEOUT, TlsError, provider};

/// The files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) a client's certificate must chain to; set, a client without
    /// such a certificate is refused during the handshake (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A server configuration, reloaded when its files change.
#[derive(Clone)]
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `files`; an error names the file and what is wrong with it. Inside a Tokio
    /// runtime, the files are watched from then on.
    pub fn load(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.client_ca.clone());
        let mutual = files.client_ca.is_some();
        let files = files.clone();
        let config = Reloading::load("runner TLS", paths, move |contents| build(&files, contents))?;
        Ok(ServerTls { config, mutual })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The configuration as last loaded.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }
}

fn build(files: &ServerTlsFiles, contents: &Contents) -> Result<ServerConfig, TlsError> {
    let certs = contents.certificates(&files.cert)?;
    let key = contents.private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            what: "protocol versions".to_owned(),
            reason: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in contents.certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Config {
                    what: format!("client CA {}", ca.display()),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config {
                    what: format!("client CA {}", ca.display()),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config {
            what: format!(
                "certificate {} with key {}",
                files.cert.display(),
                files.key.display()
            ),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Connections handshaken in the background, at most this many waiting to be served.
const READY_QUEUE: usize = 128;

/// A TCP listener whose connections are served over TLS. Handshakes run in their own tasks
/// (a slow or silent client holds up no one, and gives up after [`HANDSHAKE_TIMEOUT`]); a
/// refused handshake (no client certificate under mutual TLS, one the CA did not sign, a
/// client that does not speak TLS) is logged with the peer's address and never reaches the
/// server. Every connection gets `TCP_NODELAY`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `tls` on `listener`. Must be called inside a Tokio runtime.
    pub fn new(listener: TcpListener, tls: ServerTls) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, tls, sender));
        Ok(TlsListener {
            ready,
            local_addr,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "setting TCP_NODELAY failed");
        }
        let acceptor = TlsAcceptor::from(tls.config());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::info!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
