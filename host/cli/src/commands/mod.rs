//! One module per group of commands.

pub(crate) mod admin_client;
pub(crate) mod author;
pub(crate) mod certs;
pub(crate) mod config;
pub(crate) mod credentials;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod events;
pub(crate) mod gateway;
pub(crate) mod installs;
pub(crate) mod logs;
pub(crate) mod manifest_schema;
pub(crate) mod migrate;
pub(crate) mod new;
pub(crate) mod platform;
pub(crate) mod policy;
pub(crate) mod registry;
pub(crate) mod runner;
pub(crate) mod secrets;
pub(crate) mod serve;
pub(crate) mod up;
pub(crate) mod usage;

/// `listener` with `TCP_NODELAY` on every accepted connection. A streamed answer goes out
/// as several small writes (head, chunks, trailers); without it, Nagle's algorithm holds
/// the last of them until the peer's delayed acknowledgement, about 40 ms a call.
pub(crate) fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "setting TCP_NODELAY failed");
        }
    })
}
