//! Adapters that implement the runtime's capability backends on top of the registry.

pub(crate) mod secrets;
pub(crate) mod storage;
