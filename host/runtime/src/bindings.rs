//! Host bindings of the `palisade:extension` interfaces.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "palisade:extension/capabilities",
    imports: {
        default: trappable,
        "palisade:extension/secrets": async | trappable,
        "palisade:extension/storage": async | trappable,
    },
});
