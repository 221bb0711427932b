//! HTTP types for handlers: [`Request`], [`Response`], [`Method`] and the [`Router`].
//!
//! These are plain Rust values with no connection to the host, so handlers and routers
//! can be unit-tested natively with `cargo test`.

mod method;
pub(crate) mod reader;
mod request;
pub(crate) mod response;
mod router;
mod writer;

pub use method::{EmptyMethodError, Method};
pub use reader::{BodyReader, ReadBodyError};
pub use request::Request;
pub use response::Response;
pub use router::Router;
pub use writer::{BodyWriter, StreamClosed};
