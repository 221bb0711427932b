//! `wasi:http`: the hooks every instance's wasi-http context uses, and the
//! `outgoing-handler` egress interface, linked only when `http` is granted.
//!
//! wasmtime's default `send_request` (no allow-list, long timeouts) is compiled out of this
//! build (the `default-send-request` feature is off), so the only way out of an instance is
//! [`EgressHooks::send_request`], which fails closed: until an allow-list policy is
//! configured for the install, every request is refused with `HTTP-request-denied`.

use std::future::Future;
use std::sync::Arc;

use http::HeaderName;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttp,
    WasiHttpHooks,
};

use crate::state::InstanceState;

/// Headers a guest may never set on an outgoing request, beyond wasi-http's defaults.
const EXTRA_FORBIDDEN: [&str; 2] = ["proxy-authorization", "x-forwarded-for"];

/// Per-call wasi-http hooks: header filter and the egress gate.
#[derive(Debug, Default)]
pub struct EgressHooks;

/// The future a `send_request` hook returns.
type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name: &HeaderName| {
            DEFAULT_FORBIDDEN_HEADERS.contains(name)
                || EXTRA_FORBIDDEN.iter().any(|h| name.as_str() == *h)
        })
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::warn!(%authority, "egress refused: no allow-list policy permits it");
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

/// Links `wasi:http/outgoing-handler`.
pub fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::bindings::http::outgoing_handler::add_to_linker::<_, WasiHttp>(
        linker,
        wasmtime_wasi_http::WasiHttpView::http,
    )
}
