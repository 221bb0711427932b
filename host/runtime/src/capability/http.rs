//! `wasi:http`: the hooks every instance's wasi-http context uses, and the
//! `outgoing-handler` egress interface, linked only when `http` is granted.
//!
//! wasmtime's default `send_request` (no allow-list, long timeouts) is compiled out of this
//! build (the `default-send-request` feature is off), so the only way out of an instance is
//! [`EgressHooks::send_request`]: the install's allow-list ∩ the operator's
//! [`EgressPolicy`], checked resolved addresses, bounded sizes and times (see
//! [`super::egress`]). Hooks built without a grant refuse every request with
//! `HTTP-request-denied`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use palisade_bundle::manifest::{AllowedOrigin, Capabilities};
use palisade_protocol::trace::{self, TRACEPARENT, TraceParent};
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttp,
    WasiHttpHooks,
};

use super::egress::{self, Exchange, IoFuture, Timeouts};
pub use super::egress::{EgressCounters, EgressPolicy};
use crate::capability::{Capability, CapabilityKey, Configure, Prepare};
use crate::state::InstanceState;

/// Headers a guest may never set on an outgoing request, beyond wasi-http's defaults.
const EXTRA_FORBIDDEN: [&str; 2] = ["proxy-authorization", "x-forwarded-for"];

/// Per-call wasi-http hooks: the header filter and the egress gate.
#[derive(Debug, Default)]
pub struct EgressHooks {
    call: Option<Arc<CallEgress>>,
    counters: Arc<EgressCounters>,
}

/// What the egress gate of one call knows.
#[derive(Debug)]
struct CallEgress {
    allow: Vec<AllowedOrigin>,
    policy: Arc<EgressPolicy>,
    deadline: tokio::time::Instant,
    /// The call's own position in its trace: each request is a child span of it, sent on
    /// as `traceparent`.
    trace: Option<TraceParent>,
}

/// The future a `send_request` hook returns.
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl EgressHooks {
    /// Hooks that refuse every outgoing request.
    pub fn deny_all() -> Self {
        EgressHooks::default()
    }

    /// Hooks of one call: requests to the origins of `grants.http` that `policy` does not
    /// forbid, every exchange ending by `deadline`. Without an `http` grant, every request is
    /// refused.
    pub fn for_call(
        policy: &EgressPolicy,
        grants: &Capabilities,
        deadline: std::time::Instant,
    ) -> Self {
        Self::with_policy(Arc::new(policy.clone()), grants, deadline, None)
    }

    /// As [`EgressHooks::for_call`], with the runtime's shared policy.
    fn with_policy(
        policy: Arc<EgressPolicy>,
        grants: &Capabilities,
        deadline: std::time::Instant,
        trace: Option<TraceParent>,
    ) -> Self {
        let Some(http) = &grants.http else {
            return EgressHooks::deny_all();
        };
        let allow = http
            .allow
            .iter()
            .filter_map(|entry| match AllowedOrigin::parse(entry) {
                Ok(origin) => Some(origin),
                Err(e) => {
                    tracing::warn!(error = %e, "egress allow-list entry ignored");
                    None
                }
            })
            .collect();
        EgressHooks {
            call: Some(Arc::new(CallEgress {
                allow,
                policy,
                deadline: tokio::time::Instant::from_std(deadline),
                trace,
            })),
            counters: Arc::default(),
        }
    }

    /// The call's egress counters (bytes out and in, requests started).
    pub fn counters(&self) -> Arc<EgressCounters> {
        self.counters.clone()
    }

    fn refuse(error: Error) -> SendFuture {
        Box::new(async move { Err(error) })
    }
}

impl WasiHttpHooks for EgressHooks {
    /// Bodies move in chunks of at most this size, which bounds what one call holds.
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::execute::BODY_CHUNK_BYTES
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name: &HeaderName| {
            DEFAULT_FORBIDDEN_HEADERS.contains(name)
                || EXTRA_FORBIDDEN.iter().any(|h| name.as_str() == *h)
        })
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let Some(call) = &self.call else {
            tracing::warn!(uri = %request.uri(), "egress refused: `http` is not granted");
            return Self::refuse(Error::HttpRequestDenied);
        };
        let policy = &call.policy;
        let target = match egress::authorize(request.uri(), &call.allow, policy) {
            Ok(target) => target,
            Err(denial) => {
                tracing::warn!(reason = %denial, "egress refused");
                return Self::refuse(Error::HttpRequestDenied);
            }
        };
        if !self.counters.start_request(policy.max_requests_per_call) {
            tracing::warn!(
                max = policy.max_requests_per_call,
                "egress refused: request limit of the call reached"
            );
            return Self::refuse(Error::ConnectionLimitReached);
        }
        let Some(tls) = egress::default_tls() else {
            return Self::refuse(Error::ConfigurationError);
        };
        // A span per request; the third party sees it as the parent, in the call's trace,
        // whatever the guest set.
        let span = tracing::info_span!(
            "egress",
            method = %request.method(),
            host = request.uri().host().unwrap_or_default(),
        );
        if let Some(trace) = &call.trace
            && let Ok(value) = HeaderValue::try_from(trace::position(&span, trace).to_string())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let options = options.unwrap_or_default();
        let policy_connect = Duration::from_millis(policy.connect_timeout_ms);
        let exchange = Exchange {
            target,
            policy: policy.clone(),
            counters: self.counters.clone(),
            tls,
            timeouts: Timeouts {
                connect: options
                    .connect_timeout
                    .map_or(policy_connect, |t| t.min(policy_connect)),
                first_byte: options.first_byte_timeout,
                between_bytes: options.between_bytes_timeout,
                deadline: call.deadline,
            },
        };
        Box::new(egress::send(exchange, request).instrument(span))
    }
}

/// The `http` capability: the operator's egress policy. Its call state is the call's
/// wasi-http hooks, which wasi-http reaches through [`InstanceState`]'s `WasiHttpView`
/// (an instance without the grant gets [`EgressHooks::deny_all`] there, since the
/// handler's own response body goes through the hooks too).
pub(crate) struct Http {
    policy: Arc<EgressPolicy>,
}

impl Capability for Http {
    const KEY: CapabilityKey = CapabilityKey::Http;
    type State = EgressHooks;

    fn configure(runtime: &Configure<'_>) -> Self {
        Http {
            policy: Arc::new(runtime.config.egress.clone()),
        }
    }

    fn prepare(&self, call: &Prepare<'_>) -> Option<EgressHooks> {
        let grants = &call.invocation.grants;
        grants.http.is_some().then(|| {
            let trace = call.invocation.trace;
            EgressHooks::with_policy(self.policy.clone(), grants, call.deadline, trace)
        })
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::bindings::http::outgoing_handler::add_to_linker::<_, WasiHttp>(
            linker,
            wasmtime_wasi_http::WasiHttpView::http,
        )
    }
}

#[cfg(test)]
mod tests;
