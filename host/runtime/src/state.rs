//! The data of one call's `Store`: WASI contexts, the resource table, the memory limiter,
//! the always-linked `context`, and the granted capabilities' per-call state (all in
//! [`CallCapabilities`]).

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::CallCapabilities;
use crate::capability::context::ContextState;
use crate::capability::http::EgressHooks;
use crate::capture::Capture;
use crate::config::RuntimeConfig;
use crate::limits::MemoryLimiter;

/// Everything a call's instance can reach through the host.
pub struct InstanceState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    /// The hooks of an instance without `http`: every outgoing request refused.
    pub(crate) no_egress: EgressHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) context: ContextState,
    pub(crate) caps: CallCapabilities,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
}

impl InstanceState {
    /// Builds the state of one call: no environment, no arguments, no preopened
    /// directories, no network; stdout and stderr captured up to the configured bound;
    /// wasmtime's WASI resource limits set from `config`.
    pub(crate) fn new(
        config: &RuntimeConfig,
        context: ContextState,
        caps: CallCapabilities,
        limiter: MemoryLimiter,
    ) -> Self {
        let stdout = Capture::new(config.stdio_capture_bytes);
        let stderr = Capture::new(config.stdio_capture_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(config.max_random_bytes)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(config.max_header_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(config.max_resources);
        InstanceState {
            table,
            wasi,
            http,
            no_egress: EgressHooks::deny_all(),
            limiter,
            context,
            caps,
            stdout,
            stderr,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: match &mut self.caps.http {
                Some(hooks) => hooks,
                None => &mut self.no_egress,
            },
        }
    }
}
