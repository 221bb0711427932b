//! Author commands: build, keygen, pack, sign, verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_bundle::{ContentHash, SigningKey, TrustBundle, decode_signature, pack_dir};

use crate::datadir::{DataDir, read_bytes, write_file, write_private};

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The extension crate (or a workspace of them).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the bundle of an extension crate (one with a `manifest.json`);
    /// default `target/palisade/bundle.tar.zst` in the crate.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Path of the private key to write; the public key goes beside it as `.pub.pem`.
    #[arg(long, default_value = "publisher.key.pem")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PackArgs {
    /// Directory holding `manifest.json` (and optionally `ui/`).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The built component (see `palisade build`).
    #[arg(long)]
    pub component: PathBuf,
    /// Where to write the bundle.
    #[arg(short, long, default_value = "bundle.tar.zst")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The bundle to sign.
    pub bundle: PathBuf,
    /// The publisher's private key (PKCS#8 PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the signature (default: `<bundle>.sig`).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The bundle to verify.
    pub bundle: PathBuf,
    /// Its signature (default: `<bundle>.sig`); base64 or raw DER.
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// PEM file of trusted public keys (default: the keys the registry trusts).
    #[arg(long)]
    pub trust: Option<PathBuf>,
}

/// `<bundle>.sig`.
pub(crate) fn default_signature_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// `palisade build`: builds the crate; for an extension crate (a `manifest.json` beside
/// its `Cargo.toml`) also checks the manifest and the component's imports, packs the
/// bundle and prints its content hash and size.
pub(crate) fn build(args: BuildArgs) -> Result<()> {
    let components = build_components(&args.dir)?;
    let manifest_path = args.dir.join("manifest.json");
    if !manifest_path.exists() {
        for component in components {
            println!("{}", component.display());
        }
        return Ok(());
    }
    let manifest = read_manifest(&manifest_path)?;
    let component = pick_component(&manifest, &components)?;
    println!("built {}", component.display());
    check_component_imports(&read_bytes(component)?, &manifest)?;
    let step = crate::progress::Step::start(format!("packing {}", args.dir.display()));
    let bundle = pack_dir(&args.dir, component)
        .with_context(|| format!("packing {}", args.dir.display()))?;
    drop(step);
    let out = args
        .out
        .unwrap_or_else(|| args.dir.join("target/palisade/bundle.tar.zst"));
    write_file(&out, &bundle)?;
    println!(
        "packed {}@{} into {}: {}, {} bytes",
        manifest.id,
        manifest.version,
        out.display(),
        ContentHash::of(&bundle),
        bundle.len()
    );
    Ok(())
}

/// The manifest at `path`, validated as publish validates it.
/// First against the manifest's JSON Schema, naming every place that does not conform.
pub(crate) fn read_manifest(path: &Path) -> Result<palisade_bundle::Manifest> {
    let bytes = read_bytes(path)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let problems = super::manifest_schema::problems(&value);
    if !problems.is_empty() {
        bail!(
            "{} does not match the manifest schema (docs/manifest.schema.json):\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    palisade_bundle::Manifest::from_json(&bytes)
        .with_context(|| format!("{} is not a valid manifest", path.display()))
}

/// The component among those a build made that `manifest` names (its `component`), or the
/// only one.
pub(crate) fn pick_component<'a>(
    manifest: &palisade_bundle::Manifest,
    components: &'a [PathBuf],
) -> Result<&'a PathBuf> {
    components
        .iter()
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name == manifest.component.as_str())
        })
        .or_else(|| (components.len() == 1).then(|| &components[0]))
        .with_context(|| {
            format!(
                "the build made no `{}` (the manifest's `component`)",
                manifest.component
            )
        })
}

/// Refuses a component that imports what `manifest` does not ask for, naming every
/// manifest key to add (publish would refuse it too).
pub(crate) fn check_component_imports(
    component: &[u8],
    manifest: &palisade_bundle::Manifest,
) -> Result<()> {
    let missing = missing_grants(component, &manifest.capabilities)?;
    if !missing.is_empty() {
        bail!(
            "the component imports what its manifest does not ask for:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Each import of `component` that `capabilities` does not grant, as a line naming the
/// manifest key to add (every one, not just the first).
fn missing_grants(
    component: &[u8],
    capabilities: &palisade_bundle::manifest::Capabilities,
) -> Result<Vec<String>> {
    let imports = palisade_bundle::imports::component_imports(component)
        .context("reading the component's imports")?;
    Ok(imports
        .iter()
        .filter_map(|import| {
            palisade_bundle::imports::check_imports(std::slice::from_ref(import), capabilities)
                .err()
                .map(|e| e.to_string())
        })
        .collect())
}

/// The target extensions are built for.
pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";

/// Runs `cargo build --release --target wasm32-wasip2` in `dir` and returns the `.wasm`
/// files it produced. The target is added with rustup first when the toolchain lacks it.
pub(crate) fn build_components(dir: &Path) -> Result<Vec<PathBuf>> {
    ensure_wasm_target(dir)?;
    let output = cargo_build(dir)
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    built_components(dir, &output)
}

/// The `cargo build` of [`build_components`] (without the target check), its diagnostics
/// on this process's stderr and its JSON messages on stdout, for [`built_components`].
pub(crate) fn cargo_build(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit());
    command
}

/// The `.wasm` files a finished [`cargo_build`] in `dir` produced; an error when it
/// failed or made none.
pub(crate) fn built_components(dir: &Path, output: &std::process::Output) -> Result<Vec<PathBuf>> {
    if !output.status.success() {
        bail!("cargo build in {} failed", dir.display());
    }
    let mut components = Vec::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(files) = message["filenames"].as_array() {
            components.extend(
                files
                    .iter()
                    .filter_map(|f| f.as_str())
                    .filter(|f| f.ends_with(".wasm"))
                    .map(PathBuf::from),
            );
        }
    }
    if components.is_empty() {
        bail!(
            "cargo build in {} produced no .wasm component (is the crate a cdylib?)",
            dir.display()
        );
    }
    Ok(components)
}

/// Adds [`WASM_TARGET`] to the toolchain that builds `dir` when it is missing. That
/// toolchain is the one rustup picks there (`rust-toolchain.toml`, `RUSTUP_TOOLCHAIN`), so
/// the check and the `rustup target add` run in `dir` too. Without rustup the error says
/// what to install instead.
pub(crate) fn ensure_wasm_target(dir: &Path) -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .current_dir(dir)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if libdir.is_some_and(|dir| dir.is_dir()) {
        return Ok(());
    }
    eprintln!("the Rust toolchain lacks the {WASM_TARGET} target: adding it with rustup");
    let status = match Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", WASM_TARGET])
        .status()
    {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "the Rust toolchain lacks the {WASM_TARGET} target and rustup is not installed: \
             install rustup (https://rustup.rs) and run `rustup target add {WASM_TARGET}`, \
             or add your distribution's {WASM_TARGET} standard library"
        ),
        Err(e) => bail!("running `rustup target add {WASM_TARGET}`: {e}"),
    };
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed ({status}); run it by hand and retry");
    }
    Ok(())
}

pub(crate) fn keygen(args: KeygenArgs) -> Result<()> {
    let public = public_key_path(&args.out);
    if !args.force && (args.out.exists() || public.exists()) {
        bail!(
            "{} or {} exists; pass --force to overwrite",
            args.out.display(),
            public.display()
        );
    }
    let key = SigningKey::generate().context("generating a P-256 key")?;
    write_private(&args.out, &key.to_pem()?)?;
    write_file(&public, key.public_key_pem()?.as_bytes())?;
    println!("private key: {}", args.out.display());
    println!("public key:  {}", public.display());
    Ok(())
}

/// `x.key.pem` → `x.pub.pem`; anything else → `<name>.pub.pem`.
pub(crate) fn public_key_path(private: &Path) -> PathBuf {
    let name = private.to_string_lossy();
    match name.strip_suffix(".key.pem") {
        Some(stem) => PathBuf::from(format!("{stem}.pub.pem")),
        None => PathBuf::from(format!("{name}.pub.pem")),
    }
}

pub(crate) fn pack(args: PackArgs) -> Result<()> {
    let bytes = pack_dir(&args.dir, &args.component)
        .with_context(|| format!("packing {}", args.dir.display()))?;
    write_file(&args.out, &bytes)?;
    println!("{} {}", ContentHash::of(&bytes), args.out.display());
    Ok(())
}

pub(crate) fn sign(args: SignArgs) -> Result<()> {
    let key = SigningKey::from_pem(&read_bytes(&args.key)?)
        .with_context(|| format!("reading the signing key {}", args.key.display()))?;
    let bundle = read_bytes(&args.bundle)?;
    let signature = key.sign(&bundle)?;
    let out = args
        .out
        .unwrap_or_else(|| default_signature_path(&args.bundle));
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(signature);
    write_file(&out, format!("{text}\n").as_bytes())?;
    println!("{}", out.display());
    Ok(())
}

pub(crate) async fn verify(data_dir: &DataDir, args: VerifyArgs) -> Result<()> {
    let trust = match &args.trust {
        Some(path) => TrustBundle::load(path)
            .with_context(|| format!("reading the trust bundle {}", path.display()))?,
        None => {
            let registry = data_dir.registry().await?;
            let set = registry.trust_set().await?;
            (*set).clone()
        }
    };
    let bundle = read_bytes(&args.bundle)?;
    let sig_path = args
        .signature
        .unwrap_or_else(|| default_signature_path(&args.bundle));
    let signature = decode_signature(&read_bytes(&sig_path)?);
    let key = trust
        .verify(&bundle, &signature)
        .with_context(|| format!("verifying {}", args.bundle.display()))?;
    println!(
        "ok: {} signed by {}",
        ContentHash::of(&bundle),
        key.as_str()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use palisade_bundle::manifest::Capabilities;

    use super::*;

    /// A component that imports the interfaces `names` (as empty instances).
    fn importing(names: &[&str]) -> Vec<u8> {
        let imports: String = names
            .iter()
            .map(|name| format!("(import \"{name}\" (instance))"))
            .collect();
        wat::parse_str(format!("(component {imports})")).unwrap()
    }

    #[test]
    fn every_ungranted_import_names_the_manifest_key_to_add() {
        let component = importing(&[
            "palisade:extension/storage@0.1.0",
            "palisade:extension/cache@0.1.0",
            "palisade:extension/log@0.1.0",
        ]);
        let missing = missing_grants(&component, &Capabilities::default()).unwrap();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("capabilities.storage"), "{missing:?}");
        assert!(missing[1].contains("capabilities.cache"), "{missing:?}");
        let granted = Capabilities {
            cache: true,
            storage: Some(palisade_bundle::manifest::StorageCapability {
                namespaces: vec!["n".into()],
                max_bytes: None,
            }),
            ..Capabilities::default()
        };
        assert!(missing_grants(&component, &granted).unwrap().is_empty());
    }
}
