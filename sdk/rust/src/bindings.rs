//! Bindings generated from the WIT package in `wit/`, one world per module so that a
//! component imports only the interfaces its code actually calls. Nothing here is part of
//! the public API; the public modules wrap it in plain Rust types.

#![allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]

/// The `handler` world: the `wasi:http/incoming-handler` export and the `wasi:http/types`
/// (with their `wasi:io` and `wasi:clocks` dependencies) it needs.
pub mod handler {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/handler",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__palisade_export_incoming_handler",
    });
}

/// The `with-context` world: `palisade:extension/context`.
pub(crate) mod context {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-context",
    });
}

/// The `with-log` world: `palisade:extension/log`.
pub(crate) mod log {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-log",
    });
}

/// The `with-storage` world: `palisade:extension/storage`.
#[cfg(feature = "storage")]
pub(crate) mod storage {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-storage",
    });
}

/// The `with-secrets` world: `palisade:extension/secrets`.
#[cfg(feature = "secrets")]
pub(crate) mod secrets {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-secrets",
    });
}

/// The `with-metrics` world: `palisade:extension/metrics`.
#[cfg(feature = "metrics")]
pub(crate) mod metrics {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-metrics",
    });
}

/// The `with-cache` world: `palisade:extension/cache`.
#[cfg(feature = "cache")]
pub(crate) mod cache {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-cache",
    });
}

/// The `with-http` world: `wasi:http/outgoing-handler`, sharing the `wasi:http/types`,
/// `wasi:io` and `wasi:clocks` bindings of the `handler` module so that requests, bodies
/// and streams are the same Rust types on both sides.
#[cfg(feature = "http-client")]
pub(crate) mod http_client {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "palisade:extension/with-http",
        with: {
            "wasi:http/outgoing-handler@0.2.12": generate,
            "wasi:http/types@0.2.12": crate::bindings::handler::wasi::http::types,
            "wasi:io/error@0.2.12": crate::bindings::handler::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::handler::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::handler::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::handler::wasi::clocks::monotonic_clock,
        },
    });
}
