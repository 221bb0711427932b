//! Compiling components: an in-memory LRU of compiled components (bounded by count and
//! code bytes), then this runner's own sealed artifacts on disk or signed artifacts in the
//! shared store, then the compiler. See [`crate::artifacts`] for why deserializing is sound here.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::Runtime;
use crate::error::LoadError;

/// How long a content hash whose compile ran out of time is refused without compiling.
pub(crate) const COMPILE_REFUSAL: Duration = Duration::from_secs(600);

/// Bound on the content hashes remembered as refused (cleared when full).
const MAX_REFUSED: usize = 1024;

/// Compiled components by content hash, least recently used evicted first.
pub(crate) struct CompileCache {
    entries: LruCache<String, (Component, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl CompileCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        CompileCache {
            entries: LruCache::new(
                NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn get(&mut self, content_hash: &str) -> Option<Component> {
        self.entries.get(content_hash).map(|(c, _)| c.clone())
    }

    pub(crate) fn insert(&mut self, content_hash: String, component: Component) {
        let range = component.image_range();
        let size = (range.end as usize).saturating_sub(range.start as usize);
        if let Some((_, old)) = self.entries.put(content_hash, (component, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            match self.entries.pop_lru() {
                Some((_, (_, evicted))) => self.bytes -= evicted,
                None => break,
            }
        }
        // The LRU itself bounds the count; keep the byte total in step with its evictions.
        self.bytes = self.entries.iter().map(|(_, (_, s))| *s).sum();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The loads (from an artifact or the compiler) running now, by content hash.
///
/// A load runs in a task of its own, so it ends and fills the in-memory cache even when
/// the call that started it is gone: a call whose deadline passes during a long compile
/// (a JavaScript engine embedded in the component takes seconds) leaves the compile
/// running, and the next call finds the component compiled. A load of the same content
/// hash meanwhile waits for the running one instead of compiling the same bytes again.
#[derive(Clone, Default)]
pub(crate) struct Compiling(Arc<Mutex<HashMap<String, watch::Receiver<()>>>>);

impl Compiling {
    /// Registers a load of `content_hash`; when one is running already, returns what
    /// reports its end instead.
    fn start(&self, content_hash: &str) -> Result<Landing, watch::Receiver<()>> {
        let (done, running) = watch::channel(());
        let Ok(mut loads) = self.0.lock() else {
            // A poisoned map only loses the sharing: load without registering.
            return Ok(Landing {
                compiling: None,
                content_hash: content_hash.to_owned(),
                _done: done,
            });
        };
        if let Some(running) = loads.get(content_hash) {
            return Err(running.clone());
        }
        loads.insert(content_hash.to_owned(), running);
        Ok(Landing {
            compiling: Some(self.clone()),
            content_hash: content_hash.to_owned(),
            _done: done,
        })
    }

    /// How many loads are running.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.0.lock().map_or(0, |loads| loads.len())
    }
}

/// Held by a running load. Dropping it (the load ended, failed, panicked or was cancelled
/// with the runtime) unregisters the load and then wakes the loads waiting for it.
struct Landing {
    compiling: Option<Compiling>,
    content_hash: String,
    _done: watch::Sender<()>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(Ok(mut loads)) = self.compiling.as_ref().map(|c| c.0.lock()) {
            loads.remove(&self.content_hash);
        }
        // `_done` is dropped after this: the waiters wake to an unregistered load.
    }
}

/// Where compiled components came from since the runtime started.
#[derive(Debug, Default)]
pub(crate) struct CompileCounters {
    pub(crate) compiled: AtomicU64,
    pub(crate) from_artifact: AtomicU64,
    pub(crate) from_memory: AtomicU64,
    /// Time spent compiling from wasm, in microseconds.
    pub(crate) compile_micros: AtomicU64,
}

/// A snapshot of [`CompileCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileStats {
    /// Components compiled from wasm.
    pub compiled: u64,
    /// Components deserialized from a sealed precompiled artifact.
    pub from_artifact: u64,
    /// Loads served from the in-memory cache.
    pub from_memory: u64,
}

/// Runs one compile on a thread pool of its own.
///
/// wasmtime compiles a component's functions in parallel on the rayon pool of the calling
/// thread (the global pool by default), and rayon's workers finish the work queued with
/// them before they take new work: on one shared pool a large component (an embedded
/// JavaScript engine is 10 to 20 s of compiling on two cores) held up every compile that
/// started after it, and the calls waiting for those timed out. With a pool per
/// compile the operating system shares the cores between the compiles instead.
fn on_threads_of_its_own<T: Send>(compile: impl FnOnce() -> T + Send) -> T {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("palisade-compile-{i}"))
        .build()
    {
        Ok(pool) => pool.install(compile),
        // No threads to be had: compile on the shared pool rather than not at all.
        Err(_) => compile(),
    }
}

/// A short stable name for the engine's compatibility hash: artifacts built by an engine
/// with other settings or another wasmtime version get other names.
pub(crate) fn engine_hash(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Runtime {
    /// The compiled component for `content_hash`: from memory, a sealed artifact, or the
    /// compiler (which then stores an artifact). The load runs on in its own task when
    /// the caller stops waiting, and joins a load of the same hash that is running
    /// already ([`Compiling`]).
    pub(crate) async fn compile(
        &self,
        content_hash: &str,
        wasm: Vec<u8>,
    ) -> Result<Component, LoadError> {
        let landing = loop {
            if let Some(component) = self.in_memory(content_hash) {
                return Ok(component);
            }
            match self.compiling.start(content_hash) {
                Ok(landing) => break landing,
                // Ends with the running load, whatever its outcome; then look again (a
                // failed load is tried again here, one that ran out of time is refused
                // at once).
                Err(mut running) => while running.changed().await.is_ok() {},
            }
        };
        let runtime = self.clone();
        let content_hash = content_hash.to_owned();
        let task = tokio::spawn(async move {
            let _landing = landing;
            let component = match runtime.load_artifact(&content_hash).await {
                Some(component) => {
                    runtime
                        .counters
                        .from_artifact
                        .fetch_add(1, Ordering::Relaxed);
                    component
                }
                None => runtime.compile_fresh(&content_hash, wasm).await?,
            };
            if let Ok(mut cache) = runtime.components.lock() {
                cache.insert(content_hash, component.clone());
            }
            Ok(component)
        });
        task.await.map_err(|e| LoadError::Join(e.to_string()))?
    }

    /// The compiled component for `content_hash` from the in-memory cache, counted as a
    /// hit.
    fn in_memory(&self, content_hash: &str) -> Option<Component> {
        let component = self
            .components
            .lock()
            .ok()
            .and_then(|mut c| c.get(content_hash))?;
        self.counters.from_memory.fetch_add(1, Ordering::Relaxed);
        Some(component)
    }

    /// Compiles `wasm` and stores its artifact: sealed in the local cache and, with the
    /// operator's signing key, signed in the shared store, so that the first call after a
    /// deploy does not pay compile time (`palisade publish --precompile`).
    pub async fn precompile(&self, content_hash: &str, wasm: Vec<u8>) -> Result<(), LoadError> {
        self.compile_fresh(content_hash, wasm).await.map(|_| ())
    }

    /// Where compiled components came from so far.
    pub fn compile_stats(&self) -> CompileStats {
        CompileStats {
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            from_artifact: self.counters.from_artifact.load(Ordering::Relaxed),
            from_memory: self.counters.from_memory.load(Ordering::Relaxed),
        }
    }

    /// Time spent compiling components from wasm so far (a compile that ran out of time
    /// counts up to its limit).
    pub fn compile_time(&self) -> Duration {
        Duration::from_micros(self.counters.compile_micros.load(Ordering::Relaxed))
    }

    async fn load_artifact(&self, content_hash: &str) -> Option<Component> {
        let artifacts = self.services.artifacts.as_ref()?;
        let bytes = artifacts.load(content_hash, &self.engine_hash).await?;
        match self.deserialize(&bytes) {
            Ok(component) => {
                tracing::debug!(content_hash, "loaded a precompiled artifact");
                Some(component)
            }
            Err(e) => {
                tracing::warn!(content_hash, error = %e, "a sealed artifact did not load; recompiling");
                None
            }
        }
    }

    async fn compile_fresh(
        &self,
        content_hash: &str,
        wasm: Vec<u8>,
    ) -> Result<Component, LoadError> {
        self.check_not_refused(content_hash)?;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let engine = self.engine.clone();
        let Some(artifacts) = &self.services.artifacts else {
            let task = tokio::task::spawn_blocking(move || {
                on_threads_of_its_own(|| Component::new(&engine, &wasm))
            });
            return self
                .within_compile_timeout(content_hash, task)
                .await?
                .map_err(LoadError::Compile);
        };
        let task = tokio::task::spawn_blocking(move || {
            on_threads_of_its_own(|| engine.precompile_component(&wasm))
        });
        let bytes = self
            .within_compile_timeout(content_hash, task)
            .await?
            .map_err(LoadError::Compile)?;
        artifacts
            .store(content_hash, &self.engine_hash, &bytes)
            .await;
        self.deserialize(&bytes).map_err(LoadError::Compile)
    }

    /// Refuses a content hash whose compile ran out of time recently.
    fn check_not_refused(&self, content_hash: &str) -> Result<(), LoadError> {
        let Ok(mut refused) = self.compile_refused.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        refused.retain(|_, until| *until > now);
        match refused.get(content_hash) {
            Some(until) => Err(LoadError::CompileTimeout {
                timeout_ms: self.config.compile_timeout_ms,
                retry_in_s: until.saturating_duration_since(now).as_secs(),
            }),
            None => Ok(()),
        }
    }

    /// Awaits a compile task for at most `compile_timeout_ms`. Compiling cannot be
    /// interrupted: on timeout the task runs to its end in the background and its result is
    /// dropped, and the content hash is refused for [`COMPILE_REFUSAL`] so that calls do not
    /// start the same expensive compile again.
    async fn within_compile_timeout<T>(
        &self,
        content_hash: &str,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<T, LoadError> {
        let limit = Duration::from_millis(self.config.compile_timeout_ms.max(1));
        let started = Instant::now();
        let result = tokio::time::timeout(limit, task).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters
            .compile_micros
            .fetch_add(micros, Ordering::Relaxed);
        match result {
            Ok(joined) => joined.map_err(|e| LoadError::Join(e.to_string())),
            Err(_) => {
                if let Ok(mut refused) = self.compile_refused.lock() {
                    if refused.len() >= MAX_REFUSED {
                        refused.clear();
                    }
                    refused.insert(content_hash.to_owned(), Instant::now() + COMPILE_REFUSAL);
                }
                tracing::warn!(
                    content_hash,
                    timeout_ms = self.config.compile_timeout_ms,
                    "compiling a component ran out of time; refusing it for a while"
                );
                Err(LoadError::CompileTimeout {
                    timeout_ms: self.config.compile_timeout_ms,
                    retry_in_s: COMPILE_REFUSAL.as_secs(),
                })
            }
        }
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: `Component::deserialize` requires bytes produced by wasmtime's own
        // serialization for a compatible engine. Callers pass the output of
        // `precompile_component` on this very engine, an artifact from this runner's own
        // cache whose HMAC-SHA256 seal verified under this runner's own key, or a shared
        // artifact whose Ed25519 signature verified under the operator's artifact signing
        // key — each for this content hash and this engine's compatibility hash. Runners
        // hold neither another runner's key nor the signing key, and the holders seal or
        // sign nothing but `precompile_component` output. wasmtime additionally checks the
        // artifact's header against this engine's configuration and refuses a mismatch.
        unsafe { Component::deserialize(&self.engine, bytes) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_component_is_evicted() {
        let engine = Engine::default();
        let component = || Component::new(&engine, "(component)").unwrap();
        let mut cache = CompileCache::new(2, usize::MAX);
        cache.insert("a".into(), component());
        cache.insert("b".into(), component());
        assert!(cache.get("a").is_some());
        cache.insert("c".into(), component());
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }

    #[test]
    fn the_byte_bound_evicts_too() {
        let engine = Engine::default();
        let component = || Component::new(&engine, "(component (core module (func)))").unwrap();
        let one = component();
        let range = one.image_range();
        let size = range.end as usize - range.start as usize;
        let mut cache = CompileCache::new(10, size * 2);
        for key in ["a", "b", "c", "d"] {
            cache.insert(key.into(), component());
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("d").is_some());
    }

    /// A component with thousands of functions: compiling it takes far longer than 1 ms.
    fn slow_to_compile() -> Vec<u8> {
        let mut text = String::from("(component (core module\n");
        for i in 0..4000 {
            text.push_str(&format!(
                "(func (export \"f{i}\") (param i64) (result i64) \
                 local.get 0 i64.const {i} i64.mul i64.const 7 i64.rem_u)\n"
            ));
        }
        text.push_str("))");
        text.into_bytes()
    }

    /// A component of `functions` functions of some arithmetic each.
    fn functions(functions: usize) -> Vec<u8> {
        let mut text = String::from("(component (core module\n");
        for i in 0..functions {
            text.push_str(&format!(
                "(func (export \"f{i}\") (param i64) (result i64) \
                 local.get 0 i64.const {i} i64.mul i64.const 7 i64.rem_u \
                 local.get 0 i64.add i64.const 3 i64.div_u)\n"
            ));
        }
        text.push_str("))");
        text.into_bytes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_compile_does_not_hold_up_a_small_one() {
        let rt = runtime(120_000);
        let big = functions(20_000);
        let small = functions(50);
        let alone = Instant::now();
        rt.compile("sha256:small-alone", small.clone())
            .await
            .unwrap();
        let alone = alone.elapsed();
        let started = Instant::now();
        let large = {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.compile("sha256:big", big).await.unwrap();
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let beside = Instant::now();
        rt.compile("sha256:small", small).await.unwrap();
        let beside = beside.elapsed();
        let large = large.await.unwrap();
        assert!(
            beside < large / 4,
            "a {alone:?} compile took {beside:?} beside one of {large:?}"
        );
    }

    fn runtime(compile_timeout_ms: u64) -> Runtime {
        let config = crate::RuntimeConfig {
            pooling: false,
            compile_timeout_ms,
            ..crate::RuntimeConfig::default()
        };
        Runtime::new(config, crate::HostServices::default()).unwrap()
    }

    #[tokio::test]
    async fn a_compile_over_its_time_limit_is_refused_and_not_started_again() {
        let rt = runtime(1);
        let err = rt
            .precompile("sha256:slow", slow_to_compile())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoadError::CompileTimeout { timeout_ms: 1, .. }),
            "{err}"
        );
        // The next load is refused at once, without a second compile.
        let started = std::time::Instant::now();
        let err = rt
            .compile("sha256:slow", slow_to_compile())
            .await
            .unwrap_err();
        assert!(matches!(err, LoadError::CompileTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(rt.compile_stats().compiled, 1);
        // With time enough, the same component compiles.
        runtime(60_000)
            .compile("sha256:slow", slow_to_compile())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_compile_outlives_the_call_that_started_it() {
        let rt = runtime(60_000);
        // The caller gives up long before the compile ends (a call past its deadline).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(1),
            rt.compile("sha256:slow", slow_to_compile()),
        )
        .await;
        assert!(gave_up.is_err(), "compiled within 1 ms");
        assert_eq!(rt.compiling.running(), 1, "the compile runs on");
        let mut waited = Duration::ZERO;
        while rt.compiling.running() != 0 {
            assert!(waited < Duration::from_secs(60), "the compile never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        // The next call finds it compiled: no second compile.
        rt.compile("sha256:slow", slow_to_compile()).await.unwrap();
        assert_eq!(rt.compile_stats().compiled, 1);
        assert_eq!(rt.compile_stats().from_memory, 1);
    }

    #[tokio::test]
    async fn simultaneous_loads_of_one_component_compile_it_once() {
        let rt = runtime(60_000);
        let loads = (0..4).map(|_| rt.compile("sha256:slow", slow_to_compile()));
        for loaded in futures::future::join_all(loads).await {
            loaded.unwrap();
        }
        assert_eq!(rt.compile_stats().compiled, 1);
        assert_eq!(rt.compiling.running(), 0);
        // Another component is not held up by, nor shared with, the first.
        rt.compile("sha256:other", slow_to_compile()).await.unwrap();
        assert_eq!(rt.compile_stats().compiled, 2);
    }

    #[tokio::test]
    async fn loads_waiting_on_a_failed_compile_fail_too_and_nothing_stays_registered() {
        let rt = runtime(60_000);
        let loads = (0..3).map(|_| rt.compile("sha256:bad", b"not wasm".to_vec()));
        for loaded in futures::future::join_all(loads).await {
            assert!(matches!(loaded, Err(LoadError::Compile(_))));
        }
        assert_eq!(rt.compiling.running(), 0);
    }
}
