//! Sets `palisade_fake_host` when the `testing` feature is on and the target is not
//! WebAssembly: the host functions then call the in-memory fakes of
//! [`testing`](src/testing/mod.rs) instead of the component's imports.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(palisade_fake_host)");
    let testing = std::env::var_os("CARGO_FEATURE_TESTING").is_some();
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    if testing && !wasm {
        println!("cargo::rustc-cfg=palisade_fake_host");
    }
}
