//! The shared engine, its epoch ticker, and the caches of compiled components, linkers and
//! pre-instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmFeatures,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::capability::metrics::ExtensionMetrics;
use crate::capability::{self, Configure, Configured, GrantSet, HostServices};
use crate::compile::{CompileCache, CompileCounters, Compiling, engine_hash};
use crate::config::RuntimeConfig;
use crate::error::LoadError;
use crate::state::InstanceState;

/// Bound on cached pre-instances (per content hash and grant set).
const MAX_PREPARED: usize = 1024;

/// A compiled component, not yet linked: shared by every grant set of one content hash.
#[derive(Clone)]
pub struct Compiled(wasmtime::component::Component);

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").finish_non_exhaustive()
    }
}

/// A component ready to instantiate for one grant set: the unit the runner caches per
/// (content hash, grant set).
#[derive(Clone)]
pub struct Prepared {
    pub(crate) pre: ProxyPre<InstanceState>,
    content_hash: Arc<str>,
    grants: GrantSet,
}

impl Prepared {
    /// The grant set it was linked with.
    pub fn grants(&self) -> GrantSet {
        self.grants
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("content_hash", &self.content_hash)
            .field("grants", &self.grants)
            .finish()
    }
}

/// The threads guest code runs on, apart from the caller's runtime: a guest that spins
/// until its deadline (yielding at every epoch tick) never holds a thread that serves
/// requests, accepts connections or answers health checks.
pub(crate) struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    fn new(threads: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("palisade-guest")
            .enable_all()
            .build()
            .map(|rt| Executor(Some(rt)))
    }

    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Stops the epoch ticker thread when the last runtime handle goes away.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The wasmtime host. Cheap to clone; all clones share the engine and caches.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) services: HostServices,
    /// Every capability's runtime-wide value.
    pub(crate) capabilities: Arc<Configured>,
    linkers: Arc<Mutex<HashMap<GrantSet, Arc<Linker<InstanceState>>>>>,
    pub(crate) components: Arc<Mutex<CompileCache>>,
    pub(crate) engine_hash: String,
    pub(crate) counters: Arc<CompileCounters>,
    /// Content hashes whose compile ran out of time, and until when they are refused.
    pub(crate) compile_refused: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// Loads running now, by content hash (see [`Compiling`]).
    pub(crate) compiling: Compiling,
    /// Pre-instances by content hash, then grant set: looked up on every call, so read
    /// without allocating and under a read lock.
    prepared: Arc<RwLock<HashMap<String, HashMap<GrantSet, Prepared>>>>,
    pub(crate) executor: Arc<Executor>,
    _ticker: Arc<Ticker>,
}

impl Runtime {
    /// Builds the engine from the operator's settings and starts the epoch ticker.
    /// `services` are what the storage and secrets capabilities call into.
    pub fn new(config: RuntimeConfig, services: HostServices) -> Result<Self, LoadError> {
        let engine = Engine::new(&engine_config(&config)).map_err(LoadError::Compile)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("palisade-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(LoadError::Threads)?;
        let threads = if config.guest_threads == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            config.guest_threads
        };
        let executor = Executor::new(threads).map_err(LoadError::Threads)?;
        let components =
            CompileCache::new(config.compile_cache_entries, config.compile_cache_bytes);
        let capabilities = Arc::new(Configured::new(&Configure {
            config: &config,
            services: &services,
        }));
        Ok(Runtime {
            engine_hash: engine_hash(&engine),
            counters: Arc::default(),
            compile_refused: Arc::default(),
            compiling: Compiling::default(),
            engine,
            capabilities,
            config: Arc::new(config),
            services,
            linkers: Arc::default(),
            components: Arc::new(Mutex::new(components)),
            prepared: Arc::default(),
            executor: Arc::new(executor),
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// The operator's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The series that extensions recorded through the `metrics` capability.
    pub fn metrics(&self) -> &ExtensionMetrics {
        self.capabilities.metrics.series()
    }

    /// A cached pre-instance for (content hash, grant set), if any.
    pub fn cached(&self, content_hash: &str, grants: GrantSet) -> Option<Prepared> {
        self.prepared
            .read()
            .ok()?
            .get(content_hash)?
            .get(&grants)
            .cloned()
    }

    /// Compiles `component` (already verified by the caller) if it is not cached, links it
    /// for `grants` and caches the pre-instance.
    pub async fn prepare(
        &self,
        content_hash: &str,
        component: Vec<u8>,
        grants: GrantSet,
    ) -> Result<Prepared, LoadError> {
        let compiled = self.compiled(content_hash, component).await?;
        self.link(content_hash, &compiled, grants)
    }

    /// The compiled component for `content_hash` if it is in memory (no compiling, no
    /// artifact lookup).
    pub fn compiled_in_memory(&self, content_hash: &str) -> Option<Compiled> {
        let component = self
            .components
            .lock()
            .ok()
            .and_then(|mut c| c.get(content_hash))?;
        self.counters
            .from_memory
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Compiled(component))
    }

    /// Compiles `component` (already verified by the caller) if it is not cached, without
    /// linking it: the unit a runner loads once per content hash.
    pub async fn compiled(
        &self,
        content_hash: &str,
        component: Vec<u8>,
    ) -> Result<Compiled, LoadError> {
        self.compile(content_hash, component).await.map(Compiled)
    }

    /// Links `compiled` for `grants` and caches the pre-instance.
    pub fn link(
        &self,
        content_hash: &str,
        compiled: &Compiled,
        grants: GrantSet,
    ) -> Result<Prepared, LoadError> {
        let linker = self.linker(grants)?;
        let instance_pre = linker
            .instantiate_pre(&compiled.0)
            .map_err(LoadError::Imports)?;
        let pre = ProxyPre::new(instance_pre).map_err(LoadError::NotAHandler)?;
        let prepared = Prepared {
            pre,
            content_hash: content_hash.into(),
            grants,
        };
        if let Ok(mut cache) = self.prepared.write() {
            let held: usize = cache.values().map(HashMap::len).sum();
            if held >= MAX_PREPARED {
                cache.clear();
            }
            cache
                .entry(content_hash.to_owned())
                .or_default()
                .insert(grants, prepared.clone());
        }
        Ok(prepared)
    }

    fn linker(&self, grants: GrantSet) -> Result<Arc<Linker<InstanceState>>, LoadError> {
        if let Some(linker) = self
            .linkers
            .lock()
            .ok()
            .and_then(|l| l.get(&grants).cloned())
        {
            return Ok(linker);
        }
        let linker = Arc::new(capability::build_linker(&self.engine, grants)?);
        if let Ok(mut linkers) = self.linkers.lock() {
            linkers.insert(grants, linker.clone());
        }
        Ok(linker)
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.consume_fuel(config.fuel);
    c.max_wasm_stack(config.max_wasm_stack);
    // wasi:http 0.2 handlers need none of the component-model async machinery; leaving it
    // off keeps per-store setup small.
    c.concurrency_support(false);
    // Exactly the features that publish validates with (`palisade_bundle::ENGINE_FEATURES`),
    // so what publish accepts this engine compiles.
    c.wasm_features(WasmFeatures::all(), false);
    c.wasm_features(palisade_bundle::ENGINE_FEATURES, true);
    if config.pooling {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.max(1);
        pool.total_component_instances(n);
        pool.total_core_instances(n.saturating_mul(4));
        pool.total_memories(n.saturating_mul(2));
        pool.total_tables(n.saturating_mul(4));
        // Every in-flight call runs on its own fiber stack.
        pool.total_stacks(n);
        // What one call may take of the totals above; publish checks the same caps.
        pool.max_core_instances_per_component(config.max_core_instances_per_component);
        pool.max_memories_per_component(config.max_memories_per_component);
        pool.max_tables_per_component(config.max_tables_per_component);
        pool.max_memories_per_module(palisade_bundle::component::MAX_MEMORIES_PER_MODULE);
        pool.max_tables_per_module(palisade_bundle::component::MAX_TABLES_PER_MODULE);
        // A table slot holds what the per-call limiter lets a table grow to.
        pool.table_elements(crate::limits::MAX_TABLE_ELEMENTS);
        pool.max_unused_warm_slots(config.max_unused_warm_slots);
        pool.max_memory_size(
            usize::try_from(config.max_memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
        );
        pool.linear_memory_keep_resident(config.memory_keep_resident);
        pool.table_keep_resident(config.table_keep_resident);
        pool.pagemap_scan(if config.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_bundle::{ComponentLimits, check_component};
    use wasmtime::component::Component;

    fn instances(n: usize, module: &str) -> String {
        let mut text = format!("(component (core module $m {module})\n");
        for _ in 0..n {
            text.push_str("(core instance (instantiate $m))\n");
        }
        text.push(')');
        text
    }

    /// Whatever the publish-time check accepts, the runner's engine compiles, and whatever
    /// the engine refuses, the check refuses too.
    #[test]
    fn the_publish_check_and_the_engine_agree() {
        let config = RuntimeConfig {
            max_instances: 4,
            max_core_instances_per_component: 6,
            max_memories_per_component: 2,
            max_tables_per_component: 3,
            max_memory_mb: 16,
            ..RuntimeConfig::default()
        };
        let engine = Engine::new(&engine_config(&config)).unwrap();
        let limits: ComponentLimits = config.component_limits();
        let cases = [
            ("empty", "(component)".to_owned(), true),
            ("at the instance cap", instances(6, ""), true),
            ("over the instance cap", instances(7, ""), false),
            ("at the memory cap", instances(2, "(memory 0)"), true),
            ("over the memory cap", instances(3, "(memory 0)"), false),
            ("at the table cap", instances(3, "(table 0 funcref)"), true),
            (
                "over the table cap",
                instances(4, "(table 0 funcref)"),
                false,
            ),
            ("multi-memory", instances(1, "(memory 1) (memory 1)"), false),
            (
                "two tables in a module",
                instances(1, "(table 1 funcref) (table 1 funcref)"),
                false,
            ),
            ("memory at the cap", instances(1, "(memory 256)"), true),
            ("memory over the cap", instances(1, "(memory 257)"), false),
            (
                "table at the cap",
                instances(1, "(table 100000 funcref)"),
                true,
            ),
            (
                "table over the cap",
                instances(1, "(table 100001 funcref)"),
                false,
            ),
            ("shared memory", instances(1, "(memory 1 1 shared)"), false),
            (
                "atomics",
                instances(
                    1,
                    "(memory 1) (func (drop (i32.atomic.load (i32.const 0))))",
                ),
                false,
            ),
            (
                "tail calls",
                instances(1, "(func $f (return_call $f))"),
                true,
            ),
        ];
        for (name, text, loads) in cases {
            let wasm = wat::parse_str(&text).unwrap();
            let checked = check_component(&wasm, &limits);
            let compiled = Component::new(&engine, &wasm);
            assert_eq!(checked.is_ok(), loads, "{name}: check said {checked:?}");
            assert_eq!(
                compiled.is_ok(),
                loads,
                "{name}: engine said {:?}",
                compiled.err()
            );
        }
    }
}
