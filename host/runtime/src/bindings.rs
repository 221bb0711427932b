//! Host bindings of every released `palisade:extension` version, side by side: the newest
//! from `wit/`, and each frozen release from `wit/released/<version>/`. A component
//! imports one version; the runner links them all (see [`crate::capability::released`]).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: ["../../wit", "../../wit/released/0.1.0"],
    inline: "
        package palisade:host;
        world host {
            include palisade:extension/capabilities@0.1.0;
            include palisade:extension/capabilities@0.2.0;
        }
    ",
    world: "palisade:host/host",
    imports: {
        default: trappable,
        "palisade:extension/secrets": async | trappable,
        "palisade:extension/storage": async | trappable,
    },
});

/// The frozen release `palisade:extension@0.1.0`, served by the current implementations.
pub(crate) use palisade::extension0_1_0 as v0_1_0;
/// The newest release, `palisade:extension@0.2.0`: what each capability implements.
pub(crate) use palisade::extension0_2_0 as current;
