//! Operator settings of the engine and the per-call defaults.

use serde::{Deserialize, Serialize};

/// The per-component caps' defaults live with the publish-time check.
const COMPONENT_DEFAULTS: palisade_bundle::ComponentLimits =
    palisade_bundle::ComponentLimits::DEFAULT;

/// Engine and instance settings. Every field has a documented default; operators override
/// them in the runner's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Use the pooling instance allocator (recommended: a fresh instance per call).
    pub pooling: bool,
    /// Component instances the pool can hold at once (in-flight calls per runner).
    pub max_instances: u32,
    /// Hard cap on one instance's linear memory, in MiB; manifests may ask for less.
    pub max_memory_mb: u64,
    /// Bytes of each linear memory slot kept resident between uses (pooling only).
    pub memory_keep_resident: usize,
    /// Bytes of each table slot kept resident between uses (pooling only).
    pub table_keep_resident: usize,
    /// Unused pool slots kept warm for the component that last used them (pooling only):
    /// more lets many different extensions reuse their own slots, at the cost of the
    /// memory those slots keep resident.
    pub max_unused_warm_slots: u32,
    /// Reset only the dirty pages of a reused memory slot with Linux's `PAGEMAP_SCAN`
    /// (kernel 6.7+; silently off where unsupported). Pooling only.
    pub pagemap_scan: bool,
    /// Interval of the epoch ticker, in milliseconds: running guest code yields to other
    /// calls this often, and deadlines are checked at this granularity.
    pub epoch_tick_ms: u64,
    /// Threads that run guest code that has run past its first epoch tick (0: one per CPU),
    /// separate from the threads that serve HTTP.
    pub guest_threads: usize,
    /// How a call starts: `true` (default) runs it on the caller's thread and moves it to
    /// the guest threads at its first epoch tick, so a short call costs no thread hand-off
    /// while a long-running one still never holds a serving thread; `false` hands every
    /// call to the guest threads from the start.
    pub inline_calls: bool,
    /// Hard cap on a call's deadline, in milliseconds; manifests may ask for less.
    pub max_timeout_ms: u64,
    /// Count fuel (off by default); when on, `fuel_per_call` bounds each call.
    pub fuel: bool,
    /// Fuel granted to each call when `fuel` is on and the manifest sets no lower figure.
    pub fuel_per_call: u64,
    /// Maximum wasm stack size in bytes.
    pub max_wasm_stack: usize,
    /// Bytes of stdout/stderr captured per call (the rest is dropped).
    pub stdio_capture_bytes: usize,
    /// Log lines kept per call (the rest is dropped and counted).
    pub max_log_lines: usize,
    /// Bytes of one log message kept (longer ones are cut).
    pub max_log_message_bytes: usize,
    /// Hard cap on a response body, in bytes; manifests may ask for less.
    pub max_response_bytes: usize,
    /// Limit on the in-memory size of one header map (wasi-http fields).
    pub max_header_bytes: usize,
    /// Most host resources (streams, fields, requests, pollables...) one instance may hold.
    pub max_resources: usize,
    /// Most bytes one `wasi:random` call may ask for.
    pub max_random_bytes: u64,
    /// Compiled components kept in memory (least recently used evicted first).
    pub compile_cache_entries: usize,
    /// Bound on the native code bytes of the compiled components kept in memory.
    pub compile_cache_bytes: usize,
    /// Settings of the `metrics` capability (series bound per install).
    pub metrics: crate::capability::metrics::MetricsConfig,
    /// Bounds of the `cache` capability (bytes in all, per install, per key and value; the
    /// longest time to live).
    pub cache: crate::capability::cache::CacheConfig,
    /// The operator's HTTP egress policy, applied on top of every install's allow-list.
    pub egress: crate::capability::egress::EgressPolicy,
    /// Total bytes of log lines kept per call (level, message, keys and values, captured
    /// stdout/stderr included); the first line past it ends what is kept, and a `cut`
    /// line marks the place.
    pub max_log_bytes: usize,
    /// Guest log lines written to the operator's log, per install and second, on average
    /// (0 turns the limit off); lines past it are still kept for the execution log.
    pub operator_log_lines_per_second: f64,
    /// Burst of guest log lines an install may write to the operator's log at once.
    pub operator_log_burst: u32,
    /// Core module instances one component may create (pooling only; checked at publish
    /// too, see [`RuntimeConfig::component_limits`]).
    pub max_core_instances_per_component: u32,
    /// Linear memories one component may define across its core instances.
    pub max_memories_per_component: u32,
    /// Tables one component may define across its core instances.
    pub max_tables_per_component: u32,
    /// Time limit on compiling one component, in milliseconds; a component that takes
    /// longer is refused (`load_failed`) without compiling again for 10 minutes.
    pub compile_timeout_ms: u64,
}

impl RuntimeConfig {
    /// What publish must check so that a runner with these settings loads the component:
    /// the per-component caps and the memory cap.
    pub fn component_limits(&self) -> palisade_bundle::ComponentLimits {
        palisade_bundle::ComponentLimits {
            max_core_instances: self.max_core_instances_per_component,
            max_memories: self.max_memories_per_component,
            max_tables: self.max_tables_per_component,
            max_memory_bytes: self.max_memory_mb.saturating_mul(1024 * 1024),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pooling: true,
            max_instances: 1000,
            max_memory_mb: 256,
            memory_keep_resident: 10 * 1024 * 1024,
            table_keep_resident: 1024 * 1024,
            max_unused_warm_slots: 100,
            pagemap_scan: true,
            epoch_tick_ms: 10,
            guest_threads: 0,
            inline_calls: true,
            max_timeout_ms: 60_000,
            fuel: false,
            fuel_per_call: 10_000_000_000,
            max_wasm_stack: 1024 * 1024,
            stdio_capture_bytes: 64 * 1024,
            max_log_lines: 1000,
            max_log_message_bytes: 4096,
            max_response_bytes: 16 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_resources: 10_000,
            max_random_bytes: 1024 * 1024,
            egress: Default::default(),
            compile_cache_entries: 256,
            compile_cache_bytes: 1024 * 1024 * 1024,
            metrics: Default::default(),
            cache: Default::default(),
            max_log_bytes: 256 * 1024,
            operator_log_lines_per_second: 10.0,
            operator_log_burst: 100,
            max_core_instances_per_component: COMPONENT_DEFAULTS.max_core_instances,
            max_memories_per_component: COMPONENT_DEFAULTS.max_memories,
            max_tables_per_component: COMPONENT_DEFAULTS.max_tables,
            compile_timeout_ms: 60_000,
        }
    }
}
