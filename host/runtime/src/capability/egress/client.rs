//! One outgoing exchange: resolve and check the addresses, connect to a checked address,
//! TLS for `https` verifying the requested host name, an HTTP/1.1 handshake over that
//! connection, and the response under the call's limits. Redirects are not followed: a
//! 3xx goes back to the guest as it is.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, ready};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::client::conn::http1;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use super::body::{Counted, EgressCounters, RequestBody, ResponseBody};
use super::policy::{EgressPolicy, Target};
use super::resolve::resolve;

/// The future that drives the connection after the response head has arrived.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// The time limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Resolving, connecting and the TLS and HTTP handshakes together.
    pub(crate) connect: Duration,
    /// From sending the request to the response head.
    pub(crate) first_byte: Option<Duration>,
    /// Longest pause between response body frames.
    pub(crate) between_bytes: Option<Duration>,
    /// The call's deadline: nothing outlives it.
    pub(crate) deadline: Instant,
}

/// Everything one exchange needs besides the request.
pub(crate) struct Exchange {
    pub(crate) target: Target,
    pub(crate) policy: Arc<EgressPolicy>,
    pub(crate) counters: Arc<EgressCounters>,
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) timeouts: Timeouts,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The TLS client settings: the webpki root certificates, HTTP/1.1 only. `None` if rustls
/// cannot be configured (logged once).
pub(crate) fn default_tls() -> Option<Arc<ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            tls_config(roots)
                .map_err(|e| tracing::error!(error = %e, "egress TLS configuration failed"))
                .ok()
                .map(Arc::new)
        })
        .clone()
}

/// A TLS client configuration trusting `roots`.
pub(crate) fn tls_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Sends `request` as described by `exchange`.
pub(crate) async fn send(
    exchange: Exchange,
    request: http::Request<WasiBody>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let Exchange {
        target,
        policy,
        counters,
        tls,
        timeouts,
    } = exchange;
    if Instant::now() >= timeouts.deadline {
        return Err(Error::ConnectionTimeout);
    }
    let head_only = request.method() == http::Method::HEAD;
    let request = origin_form(request, policy.max_request_bytes)?;
    let connect_by = (Instant::now() + timeouts.connect).min(timeouts.deadline);

    let addrs = resolve(&target, &policy, connect_by).await?;
    let tcp = connect(&addrs, connect_by).await?;
    let counted = Counted::new(tcp, counters);
    let stream: Box<dyn Io> = if target.https {
        let name = server_name(&target)?;
        let tls = timeout_at(connect_by, TlsConnector::from(tls).connect(name, counted))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(tls_error)?;
        Box::new(tls)
    } else {
        Box::new(counted)
    };
    let (mut sender, conn) = timeout_at(
        connect_by,
        http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(send_error)?;

    let first_byte_by = match timeouts.first_byte {
        Some(limit) => (Instant::now() + limit).min(timeouts.deadline),
        None => timeouts.deadline,
    };
    let mut response = pin!(async move {
        timeout_at(first_byte_by, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(send_error)
    });
    let mut conn = Some(conn);
    // Drive the connection while waiting for the response head.
    let response = poll_fn(|cx| match response.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(running) = conn.as_mut() else {
                return Poll::Pending;
            };
            let ended = ready!(Pin::new(running).poll(cx));
            conn = None;
            match ended {
                Ok(()) => response.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(send_error(e))),
            }
        }
    })
    .await?;

    let max = policy.max_response_bytes;
    if !head_only && content_length(response.headers()).is_some_and(|len| len > max) {
        return Err(Error::HttpResponseBodySize(Some(max)));
    }
    let deadline = timeouts.deadline;
    let between_bytes = timeouts.between_bytes;
    let response = response
        .map(|incoming| ResponseBody::new(incoming, max, between_bytes, deadline).boxed_unsync());
    let io: IoFuture = Box::new(async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        match timeout_at(deadline, conn).await {
            Err(_) => Err(Error::HttpResponseTimeout),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(response_error(e)),
        }
    });
    Ok((response, io))
}

/// The request as sent on the wire: origin-form URI (the `host` header carries the
/// authority) and the body capped at `max_body` bytes.
fn origin_form(
    request: http::Request<WasiBody>,
    max_body: u64,
) -> Result<http::Request<RequestBody>, Error> {
    if content_length(request.headers()).is_some_and(|len| len > max_body) {
        return Err(Error::HttpRequestBodySize(Some(max_body)));
    }
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(http::Request::from_parts(
        parts,
        RequestBody::new(body, max_body),
    ))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Connects to the first of `addrs` that accepts by `deadline`.
async fn connect(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Ok(stream)) => {
                // Only a latency optimisation; the exchange works without it.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                tracing::debug!(address = %addr, error = %e, "egress connect failed");
                last = Some(e.kind());
            }
        }
    }
    Err(match last {
        Some(io::ErrorKind::ConnectionRefused) => Error::ConnectionRefused,
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
            Error::ConnectionTerminated
        }
        Some(io::ErrorKind::TimedOut) => Error::ConnectionTimeout,
        _ => Error::DestinationUnavailable,
    })
}

/// The name the server certificate must match: the requested host, never the address.
fn server_name(target: &Target) -> Result<ServerName<'static>, Error> {
    match target.ip_literal() {
        Some(ip) => Ok(ServerName::IpAddress(ip.into())),
        None => ServerName::try_from(target.host.clone()).map_err(|_| Error::TlsProtocolError),
    }
}

fn tls_error(e: io::Error) -> Error {
    let cause = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    tracing::debug!(error = %e, "egress TLS handshake failed");
    match cause {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Error::TlsCertificateError
        }
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::TlsProtocolError,
    }
}

/// Maps a failure while sending the request or waiting for the head.
fn send_error(e: hyper::Error) -> Error {
    let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Error>());
    if let Some(Error::HttpRequestBodySize(size)) = source {
        return Error::HttpRequestBodySize(*size);
    }
    response_error(e)
}

/// Maps a hyper failure of the response.
pub(crate) fn response_error(e: hyper::Error) -> Error {
    if e.is_timeout() {
        Error::HttpResponseTimeout
    } else if e.is_parse_too_large() {
        Error::HttpResponseHeaderSectionSize(None)
    } else if e.is_parse() || e.is_parse_status() {
        Error::HttpProtocolError
    } else if e.is_incomplete_message() {
        Error::HttpResponseIncomplete
    } else if e.is_closed() || e.is_canceled() {
        Error::ConnectionTerminated
    } else {
        Error::Hyper(e)
    }
}

#[cfg(test)]
mod tests;
