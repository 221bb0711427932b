//! HTTP types for handlers: [`Request`], [`Response`], [`Method`] and the [`Router`].
//!
//! These are plain Rust values with no connection to the host, so handlers and routers
//! can be unit-tested natively with `cargo test`.

mod method;
mod request;
mod response;
mod router;

pub use method::{EmptyMethodError, Method};
pub use request::Request;
pub use response::Response;
pub use router::Router;
