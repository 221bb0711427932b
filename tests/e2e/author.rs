//! Author commands run as an author would run them.

use std::path::Path;
use std::process::Command;

use crate::support::palisade_binary;

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A toolchain that looks bare: `rustc` reports a target-libdir that does not exist, and
/// every tool records how it was called in `calls`.
struct BareToolchain {
    dir: tempfile::TempDir,
}

impl BareToolchain {
    fn new(with_rustup: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let calls = dir.path().join("calls");
        let missing = dir
            .path()
            .join("no-such-sysroot/lib/rustlib/wasm32-wasip2/lib");
        script(
            &bin.join("rustc"),
            &format!(
                "echo \"rustc $*\" >> {}\necho {}",
                calls.display(),
                missing.display()
            ),
        );
        script(
            &bin.join("cargo"),
            &format!("echo \"cargo $*\" >> {}\nexit 101", calls.display()),
        );
        if with_rustup {
            script(
                &bin.join("rustup"),
                &format!("echo \"rustup $* in $(pwd)\" >> {}", calls.display()),
            );
        }
        BareToolchain { dir }
    }

    fn build(&self, crate_dir: &Path) -> std::process::Output {
        let bin = self.dir.path().join("bin");
        Command::new(palisade_binary())
            .arg("build")
            .arg(crate_dir)
            .env("PATH", &bin)
            .env("CARGO", bin.join("cargo"))
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn build_adds_the_wasm_target_with_rustup_when_the_toolchain_lacks_it() {
    let toolchain = BareToolchain::new(true);
    let crate_dir = tempfile::tempdir().unwrap();
    let out = toolchain.build(crate_dir.path());
    // The fake cargo fails the build; what matters is what ran before it.
    assert!(!out.status.success());
    let calls = toolchain.calls();
    let crate_dir = crate_dir.path().canonicalize().unwrap();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].starts_with("rustc --print target-libdir --target wasm32-wasip2"));
    assert_eq!(
        calls[1],
        format!("rustup target add wasm32-wasip2 in {}", crate_dir.display()),
        "the target is added for the toolchain of the crate's directory"
    );
    assert!(calls[2].starts_with("cargo build --release --target wasm32-wasip2"));
}

#[test]
fn build_without_rustup_says_in_one_line_what_to_run() {
    let toolchain = BareToolchain::new(false);
    let crate_dir = tempfile::tempdir().unwrap();
    let out = toolchain.build(crate_dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("rustup is not installed")
            && error[0].contains("rustup target add wasm32-wasip2"),
        "{stderr}"
    );
    // Nothing was built with a toolchain that cannot build it.
    assert!(
        toolchain.calls().iter().all(|c| !c.starts_with("cargo")),
        "{:?}",
        toolchain.calls()
    );
}

/// `palisade build` of an extension crate checks its manifest and imports, packs the
/// bundle, and prints the content hash and size; the bundle is what `pack` would make.
#[test]
fn build_packs_an_extension_crate_and_prints_its_hash() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("hello.tar.zst");
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/hello");
    let output = Command::new(palisade_binary())
        .arg("build")
        .arg(&crate_dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bundle = std::fs::read(&out).unwrap();
    let hash = palisade_bundle::ContentHash::of(&bundle).to_string();
    assert!(
        stdout.contains("packed com.example.hello@0.1.0") && stdout.contains(&hash),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} bytes", bundle.len())),
        "{stdout}"
    );
}

/// `palisade new` then `palisade build`, for each template: the crate's own tests pass
/// natively, and the build checks, packs and prints the bundle's hash. The crates share one
/// target directory beside the workspace's, so later runs are quick.
#[test]
fn new_then_build_works_for_every_template() {
    let parent = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("scaffolds");
    for (name, template) in [
        ("web-hello", "http"),
        ("page-counter", "storage"),
        ("with-ui", "ui"),
        ("ticket-listener", "events"),
    ] {
        let output = Command::new(palisade_binary())
            .args(["new", name, "--template", template, "--parent"])
            .arg(parent.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{template}: {output:?}");
        let dir = parent.path().join(name);
        assert!(dir.join("manifest.json").exists() && dir.join("rust-toolchain.toml").exists());
        assert_eq!(dir.join("ui/vendor/frame.js").exists(), template == "ui");

        let test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .arg("test")
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(test.status.success(), "{template}: {test:?}");

        let out = parent.path().join(format!("{name}.tar.zst"));
        let build = Command::new(palisade_binary())
            .arg("build")
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(build.status.success(), "{template}: {build:?}");
        let stdout = String::from_utf8_lossy(&build.stdout);
        assert!(
            stdout.contains(&format!("packed com.example.{name}@0.1.0")),
            "{stdout}"
        );
        let bundle = std::fs::read(&out).unwrap();
        assert!(stdout.contains(&palisade_bundle::ContentHash::of(&bundle).to_string()));
    }
    // A directory that exists is never overwritten.
    let again = Command::new(palisade_binary())
        .args(["new", "web-hello", "--parent"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
}
