//! Per-call memory limiter: caps the instance's linear memories and tables at the call's
//! limit, records the peak, and remembers whether a growth was refused so a resulting trap
//! is reported as `out_of_memory`.

use wasmtime::ResourceLimiter;

/// Bound on table elements per instance.
pub(crate) const MAX_TABLE_ELEMENTS: usize = {
    // The publish-time check refuses a larger initial table.
    palisade_bundle::component::MAX_TABLE_ELEMENTS as usize
};

/// Tracks the memory of one call's instance.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    current: usize,
    peak: usize,
    refused: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `max_bytes` of linear memory in total.
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryLimiter {
            max_bytes,
            current: 0,
            peak: 0,
            refused: false,
        }
    }

    /// The largest total linear memory seen, in bytes.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// Whether a growth was refused.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.current - current.min(self.current) + desired;
        if total > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.current = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_beyond_the_cap_is_refused_and_remembered() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(60, 90, None).unwrap());
        assert!(!l.memory_growing(90, 120, None).unwrap());
        assert!(l.refused());
        assert_eq!(l.peak(), 90);
    }
}
