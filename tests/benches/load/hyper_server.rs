//! The ceiling: a raw hyper 1 HTTP/1.1 server answering every request with 200 `hello`, on
//! tokio's multi-thread runtime with its defaults (one worker per CPU). No routing, no
//! WebAssembly: what this machine serves over loopback when the server does nothing.

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The argument that runs this server instead of the bench: `--serve-hyper PORT`.
pub(crate) const FLAG: &str = "--serve-hyper";

/// Serves on `127.0.0.1:<port>` until killed.
pub(crate) fn main(port: Option<&str>) -> ExitCode {
    let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: {FLAG} PORT");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hyper server: tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hyper server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A connection error (the client went away) ends that connection only.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
}
