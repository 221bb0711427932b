//! # palisade-sdk
//!
//! Write Palisade extensions in plain Rust. This crate owns the guest side of the
//! `palisade:extension` WIT package: the `wasi:http/incoming-handler` export, an HTTP
//! [`Router`](http::Router) with JSON helpers, and typed wrappers over the host
//! interfaces. No generated binding types appear in its API.
//!
//! A component imports only the interfaces its code calls, and publishing refuses a
//! component that imports something its manifest does not grant. `context` and `log` are
//! always compiled in; `storage`, `secrets`, `metrics`, `cache` and `http-client` (the
//! `fetch` module) are cargo features, and `testing` adds the native test host.
//!
//! | module | WIT interface | manifest capability | feature |
//! |---|---|---|---|
//! | [`http`], [`export_handler!`], [`export_streaming_handler!`] | `wasi:http/incoming-handler` (export) | — | — |
//! | [`context`] | `palisade:extension/context` | always granted | — |
//! | [`events`] | (headers of event deliveries and schedule firings) | manifest `events`, `schedules` | — |
//! | [`time`] | `wasi:clocks/monotonic-clock` | always granted | — |
//! | [`log`] | `palisade:extension/log` | `log` (on by default) | — |
//! | `storage` | `palisade:extension/storage` | `storage` | `storage` |
//! | `secrets` | `palisade:extension/secrets` | `secrets` | `secrets` |
//! | `metrics` | `palisade:extension/metrics` | `metrics` | `metrics` |
//! | `fetch` | `wasi:http/outgoing-handler` | `http` | `http-client` |
//! | `cache` | `palisade:extension/cache` | `cache` | `cache` |
//!
//! ## A complete extension
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! palisade-sdk = { path = "../sdk/rust", features = ["storage"] }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`, built with `cargo build --release --target wasm32-wasip2`:
//!
//! ```
//! use palisade_sdk::http::{Request, Response, Router};
//! use palisade_sdk::{context, log};
//!
//! fn handle(request: Request) -> Response {
//!     Router::new()
//!         .get("/hello/:name", hello)
//!         .post("/echo", echo)
//!         .handle(request)
//! }
//!
//! fn hello(request: Request) -> Response {
//!     let name = request.param("name").unwrap_or("world");
//!     log::write(log::Level::Info, "greeting", &[("name", name)]);
//!     let tenant = context::get().tenant_id;
//!     Response::json(200, &serde_json::json!({ "greeting": format!("Hello, {name}!"), "tenant": tenant }))
//! }
//!
//! fn echo(request: Request) -> Response {
//!     match request.json::<serde_json::Value>() {
//!         Ok(value) => Response::json(200, &value),
//!         Err(error) => Response::bad_request(format!("invalid JSON: {error}")),
//!     }
//! }
//!
//! palisade_sdk::export_handler!(handle);
//! # fn main() {}
//! ```
//!
//! ## Testing handlers natively
//!
//! [`http::Request`], [`http::Response`] and [`http::Router`] are plain values, so routing
//! and request parsing can be tested with `cargo test` on the build machine. Handlers that
//! call the host ([`context`], [`log`] and the feature modules) run natively under
//! `testing::TestHost` (feature `testing`, for `[dev-dependencies]`), whose in-memory
//! fakes answer by the host's rules; without it, a native call of a host function panics.
//!
//! ```
//! use palisade_sdk::http::{Method, Request, Response, Router};
//!
//! let router = Router::new().get("/items/:id", |request: Request| {
//!     Response::json(200, &serde_json::json!({ "id": request.param("id") }))
//! });
//! let response = router.handle(Request::new(Method::Get, "/items/42"));
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.body(), br#"{"id":"42"}"#);
//! assert_eq!(router.handle(Request::new(Method::Post, "/items/42")).status(), 405);
//! ```
//!
//! ## Storage, secrets, metrics, outgoing HTTP
//!
//! ```ignore
//! use palisade_sdk::{fetch, metrics, secrets, storage};
//!
//! let revision = storage::set_json("notes", "n1", &note, storage::Condition::MustNotExist)?;
//! let note: Option<Note> = storage::get_json("notes", "n1")?;
//! let token = secrets::get("api-token")?;
//! metrics::counter_add("notes_created_total", &[], 1)?;
//! let response = fetch::fetch(fetch::Request::get("https://api.example.com/v1/status"))?;
//! ```

mod bindings;
mod body;
#[cfg(feature = "cache")]
pub mod cache;
pub mod context;
pub mod events;
mod export;
#[cfg(feature = "http-client")]
pub mod fetch;
pub mod http;
pub mod log;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "storage")]
pub mod storage;
#[cfg(palisade_fake_host)]
pub mod testing;
pub mod time;

pub use export::MAX_REQUEST_BODY_BYTES;

/// Used by [`export_handler!`] and [`export_streaming_handler!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::handler;
    pub use crate::bindings::handler::exports::wasi::http::incoming_handler::Guest as IncomingHandler;
    pub use crate::bindings::handler::wasi::http::types::{IncomingRequest, ResponseOutparam};
    pub use crate::export::{serve, serve_streaming};
}
