//! The always-linked WASI baseline: what a component built with Rust's std for
//! `wasm32-wasip2` imports. Clocks, random, io, an empty environment, exit, no terminal,
//! stdin empty, stdout/stderr captured into the call's log (bounded), a filesystem with no
//! preopened directories, and the `wasi:http/types` the handler needs. Sockets are never
//! linked.

use wasmtime::component::Linker;
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::{cli, filesystem, random};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi_http::WasiHttp;

use crate::state::InstanceState;

/// Links the baseline interfaces.
pub fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    // io (error, poll, streams), clocks, random, stdin/stdout/stderr.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(linker)?;
    let l = linker;
    random::insecure::add_to_linker::<_, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::environment::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, |t| t.cli())?;
    filesystem::types::add_to_linker::<_, WasiFilesystem>(l, |t| t.filesystem())?;
    filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, |t| t.filesystem())?;
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, WasiHttp>(
        l,
        &(&options).into(),
        wasmtime_wasi_http::WasiHttpView::http,
    )?;
    Ok(())
}
