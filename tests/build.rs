//! Builds the guest components the end-to-end tests run (the sample extensions in
//! `guests/` and the test guests in `tests/guests/`) for `wasm32-wasip2`, and exposes their
//! paths to the tests as `PALISADE_GUEST_<NAME>` environment variables and as the table
//! `GUESTS` in `$OUT_DIR/guests.rs` (crate name, component path), so that a new guest is
//! one new member of its workspace and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest workspaces, relative to the repository root; every member of each is built and
/// exposed.
const WORKSPACES: &[&str] = &["guests", "tests/guests"];

/// The `members` of a workspace's `Cargo.toml`.
fn members(workspace: &Path) -> Vec<String> {
    let manifest = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let parsed: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", manifest.display()));
    parsed
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .unwrap_or_else(|| panic!("{} has no `workspace.members`", manifest.display()))
        .iter()
        .filter_map(|member| member.as_str().map(str::to_owned))
        .collect()
}

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives inside the repository")
        .to_path_buf();
    for dir in [
        "guests",
        "tests/guests",
        "sdk/rust/src",
        "sdk/rust/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // OUT_DIR is <target>/<profile>/build/<pkg>/out: keep guest builds beside the host's.
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|p| p.join("guests"))
        .unwrap_or_else(|| out_dir.join("guests"));
    ensure_wasm_target();
    let mut built = Vec::new();
    for workspace in WORKSPACES {
        let dir = root.join(workspace);
        built.extend(build(
            &dir,
            &target_dir.join(workspace.replace('/', "-")),
            &members(&dir),
        ));
    }
    let table: String = built
        .iter()
        .map(|(name, path)| format!("    ({name:?}, {:?}),\n", path.display().to_string()))
        .collect();
    let source = format!(
        "/// Every guest component build.rs built: (crate name, path).\n\
         pub(crate) const GUESTS: &[(&str, &str)] = &[\n{table}];\n"
    );
    std::fs::write(out_dir.join("guests.rs"), source).expect("writing guests.rs");
}

/// Adds the `wasm32-wasip2` target with rustup when the toolchain lacks it: rustup adds
/// the targets of `rust-toolchain.toml` only when it installs the toolchain, so a machine
/// that already had this toolchain may not have the target yet.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target with rustup");
    // Failure is reported by the guest build below, with what to do.
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
}

/// Builds `crates` of `workspace`; returns each crate's name and component path.
fn build(workspace: &Path, target_dir: &Path, crates: &[String]) -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo for the guest components");
    assert!(
        status.success(),
        "building the guests in {} failed (is the wasm32-wasip2 target installed? \
         rust-toolchain.toml lists it)",
        workspace.display()
    );
    let mut built = Vec::new();
    for name in crates.iter() {
        let file = name.replace('-', "_");
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{file}.wasm"));
        assert!(
            path.exists(),
            "guest component {} was not built",
            path.display()
        );
        println!(
            "cargo:rustc-env=PALISADE_GUEST_{}={}",
            file.to_uppercase(),
            path.display()
        );
        built.push((name.clone(), path));
    }
    built
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
