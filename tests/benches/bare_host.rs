//! The per-call baseline: a bare wasmtime wasi-http host with the runtime's engine settings
//! (pooling allocator, keep-resident slots, pagemap scan, epoch interruption) and nothing
//! else — no limiter, no log capture, no capabilities, no deadline, no accounting. What
//! `Runtime::execute` adds on top of wasmtime is the difference between the two.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoEgress,
}

/// wasi-http's defaults, with outgoing requests refused (the guest makes none).
struct NoEgress;

type Sent = Box<dyn std::future::Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for NoEgress {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Sent,
    ) -> Box<dyn std::future::Future<Output = Result<(http::Response<WasiBody>, Sent), Error>> + Send>
    {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A bare host for one wasi-http component.
pub(crate) struct BareHost {
    engine: Engine,
    pre: ProxyPre<State>,
}

impl BareHost {
    /// Compiles `wasm` on an engine configured as the runtime's defaults are.
    pub(crate) fn new(wasm: &[u8]) -> Self {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(1000);
        pool.total_core_instances(4000);
        pool.total_memories(2000);
        pool.total_tables(4000);
        pool.max_memory_size(256 << 20);
        pool.linear_memory_keep_resident(10 << 20);
        pool.table_keep_resident(1 << 20);
        pool.pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.concurrency_support(false);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, wasm).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        let pre = ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        BareHost { engine, pre }
    }

    /// One request to `path` in a fresh instance; returns the status.
    pub(crate) async fn call(&self, path: &str) -> u16 {
        let mut store = Store::new(
            &self.engine,
            State {
                table: ResourceTable::new(),
                wasi: WasiCtx::builder().build(),
                http: WasiHttpCtx::new(),
                hooks: NoEgress,
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let request = http::Request::get(format!("http://bench.local{path}"))
            .body(
                Full::new(Bytes::new())
                    .map_err(wasmtime_wasi_http::Error::from)
                    .boxed_unsync(),
            )
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .unwrap();
        let out = store.data_mut().http().new_response_outparam(tx).unwrap();
        let proxy = self.pre.instantiate_async(&mut store).await.unwrap();
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .unwrap();
        let response = rx.await.unwrap().unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }
}

/// Mean time of one call over `calls` sequential calls (after a warm-up).
pub(crate) async fn per_call(host: &BareHost, calls: usize) -> Duration {
    for _ in 0..100 {
        assert_eq!(host.call("/hello").await, 200);
    }
    let started = Instant::now();
    for _ in 0..calls {
        assert_eq!(host.call("/hello").await, 200);
    }
    started.elapsed() / u32::try_from(calls).unwrap()
}
