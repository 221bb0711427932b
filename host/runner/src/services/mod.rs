//! Adapters that implement the runtime's capability backends on top of the registry.

pub mod secrets;
pub mod storage;
