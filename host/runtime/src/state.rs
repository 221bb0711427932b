//! The data of one call's `Store`: WASI contexts, the resource table, the memory limiter
//! and each capability's per-call state.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::CallCapabilities;
use crate::capability::context::ContextState;
use crate::capability::http::EgressHooks;
use crate::capability::log::LogState;
use crate::capture::Capture;
use crate::limits::MemoryLimiter;

/// Everything a call's instance can reach through the host.
pub struct InstanceState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) context: ContextState,
    pub(crate) log: LogState,
    pub(crate) caps: CallCapabilities,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
}

impl InstanceState {
    /// Builds the state of one call: no environment, no arguments, no preopened
    /// directories, no network; stdout and stderr captured up to `capture_bytes` each.
    pub(crate) fn new(
        context: ContextState,
        log: LogState,
        caps: CallCapabilities,
        limiter: MemoryLimiter,
        capture_bytes: usize,
        max_header_bytes: usize,
        hooks: EgressHooks,
    ) -> Self {
        let stdout = Capture::new(capture_bytes);
        let stderr = Capture::new(capture_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(max_header_bytes);
        InstanceState {
            table: ResourceTable::new(),
            wasi,
            http,
            hooks,
            limiter,
            context,
            log,
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
            hooks: &mut self.hooks,
        }
    }
}
