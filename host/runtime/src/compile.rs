//! Compiling components: an in-memory LRU of compiled components (bounded by count and
//! code bytes), then this runner's own sealed artifacts on disk or signed artifacts in the
//! shared store, then the compiler. See [`crate::artifacts`] for why deserializing is sound here.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::Runtime;
use crate::error::LoadError;

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

/// Where compiled components came from since the runtime started.
#[derive(Debug, Default)]
pub(crate) struct CompileCounters {
    pub(crate) compiled: AtomicU64,
    pub(crate) from_artifact: AtomicU64,
    pub(crate) from_memory: AtomicU64,
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

/// A short stable name for the engine's compatibility hash: artifacts built by an engine
/// with other settings or another wasmtime version get other names.
pub(crate) fn engine_hash(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Runtime {
    /// The compiled component for `content_hash`: from memory, a sealed artifact, or the
    /// compiler (which then stores an artifact).
    pub(crate) async fn compile(
        &self,
        content_hash: &str,
        wasm: Vec<u8>,
    ) -> Result<Component, LoadError> {
        if let Some(component) = self
            .components
            .lock()
            .ok()
            .and_then(|mut c| c.get(content_hash))
        {
            self.counters.from_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(component);
        }
        let component = match self.load_artifact(content_hash).await {
            Some(component) => {
                self.counters.from_artifact.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => self.compile_fresh(content_hash, wasm).await?,
        };
        if let Ok(mut cache) = self.components.lock() {
            cache.insert(content_hash.to_owned(), component.clone());
        }
        Ok(component)
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
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let engine = self.engine.clone();
        let Some(artifacts) = &self.services.artifacts else {
            return tokio::task::spawn_blocking(move || Component::new(&engine, &wasm))
                .await
                .map_err(|e| LoadError::Join(e.to_string()))?
                .map_err(LoadError::Compile);
        };
        let bytes = tokio::task::spawn_blocking(move || engine.precompile_component(&wasm))
            .await
            .map_err(|e| LoadError::Join(e.to_string()))?
            .map_err(LoadError::Compile)?;
        artifacts
            .store(content_hash, &self.engine_hash, &bytes)
            .await;
        self.deserialize(&bytes).map_err(LoadError::Compile)
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
}
