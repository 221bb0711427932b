//! `palisade new NAME [--template http|storage|ui|events]`: scaffolds an extension crate that
//! builds with `palisade build` at once: `Cargo.toml` (depending on the SDK), a pinned
//! `rust-toolchain.toml` with the `wasm32-wasip2` target, `manifest.json` (with `$schema`),
//! a handler on the SDK's router with native unit tests, a `README.md`, and for `ui` a
//! `ui/` tree with the bridge's iframe side.
//!
//! The SDK dependency is a path to this checkout's `sdk/rust` when the binary runs from one
//! (or `--sdk-path`), and otherwise the published crate (`--sdk-version`, default this
//! binary's version).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::datadir::write_file;

const LIB_HTTP: &str = include_str!("lib_http.rs.tmpl");
const LIB_STORAGE: &str = include_str!("lib_storage.rs.tmpl");
const LIB_EVENTS: &str = include_str!("lib_events.rs.tmpl");
const UI_INDEX: &str = include_str!("ui_index.html.tmpl");
const UI_APP: &str = include_str!("ui_app.js.tmpl");
/// The bridge's iframe side, as `sdk/ui` builds it (the package's tests keep the sample's
/// copy current, and this is that copy).
const FRAME_JS: &str = include_str!("../../../../../guests/ticket-widget/ui/vendor/frame.js");
const PROTOCOL_JS: &str = include_str!("../../../../../guests/ticket-widget/ui/vendor/protocol.js");
/// The toolchain this build of Palisade pins, with its `wasm32-wasip2` target.
const TOOLCHAIN: &str = include_str!("../../../../../rust-toolchain.toml");
/// The schema a new manifest names.
const SCHEMA_URL: &str = "https://palisade.dev/schemas/manifest.schema.json";

/// What the new extension starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Template {
    /// A JSON API: `GET /hello/:name`.
    Http,
    /// A counter kept in extension storage.
    Storage,
    /// The JSON API with a UI shown in the host application.
    Ui,
    /// Reacting to events (`ticket.*`) and a nightly schedule.
    Events,
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The crate's name and directory, e.g. `ticket-notes` (lowercase letters, digits, `-`).
    pub name: String,
    /// What the extension starts from.
    #[arg(long, value_enum, default_value_t = Template::Http)]
    pub template: Template,
    /// The extension id (default `com.example.<name>`).
    #[arg(long)]
    pub id: Option<String>,
    /// Where the crate's directory goes (default: the current directory).
    #[arg(long, default_value = ".")]
    pub parent: PathBuf,
    /// The SDK crate to depend on by path (default: this checkout's `sdk/rust`, when the
    /// binary runs from one).
    #[arg(long, conflicts_with = "sdk_version")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on the published SDK crate of this version instead of a path.
    #[arg(long)]
    pub sdk_version: Option<String>,
}

/// The version of the published SDK crate a new crate depends on outside a checkout: the
/// SDK's own version (`sdk/rust/Cargo.toml`, checked by a test), which follows the newest
/// WIT version.
const SDK_VERSION: &str = "0.2.0";

/// The SDK dependency of a new crate.
#[derive(Debug, PartialEq, Eq)]
enum Sdk {
    Path(PathBuf),
    Version(String),
}

impl Sdk {
    fn choose(args: &NewArgs) -> Result<Sdk> {
        if let Some(version) = &args.sdk_version {
            return Ok(Sdk::Version(version.clone()));
        }
        if let Some(path) = &args.sdk_path {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk-path {}", path.display()))?;
            if !path.join("Cargo.toml").exists() {
                bail!("--sdk-path {}: no Cargo.toml there", path.display());
            }
            return Ok(Sdk::Path(path));
        }
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/rust");
        Ok(match checkout.canonicalize() {
            Ok(path) if path.join("Cargo.toml").exists() => Sdk::Path(path),
            _ => Sdk::Version(SDK_VERSION.to_owned()),
        })
    }

    /// The dependency line's value, with `features`.
    fn dependency(&self, features: &[&str]) -> String {
        let features = features
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let source = match self {
            Sdk::Path(path) => format!("path = {:?}", path.display().to_string()),
            Sdk::Version(version) => format!("version = \"{version}\""),
        };
        format!("{{ {source}, features = [{features}] }}")
    }
}

pub(crate) fn new(args: NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let dir = args.parent.join(&args.name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("com.example.{}", args.name));
    let sdk = Sdk::choose(&args)?;
    for (path, content) in files(&args.name, &id, args.template, &sdk)? {
        write_file(&dir.join(path), content.as_bytes())?;
    }
    println!(
        "created {} ({}, extension id {id}); next: palisade build {}",
        dir.display(),
        match args.template {
            Template::Http => "http",
            Template::Storage => "storage",
            Template::Ui => "ui",
            Template::Events => "events",
        },
        dir.display()
    );
    Ok(())
}

/// A crate name Cargo and the extension id accept.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_ok || !rest_ok || name.ends_with('-') || name.len() > 64 {
        bail!(
            "`{name}` is not a usable name: use lowercase letters, digits and `-`, starting with a letter (at most 64)"
        );
    }
    Ok(())
}

/// The files of the new crate, by path.
fn files(
    name: &str,
    id: &str,
    template: Template,
    sdk: &Sdk,
) -> Result<Vec<(&'static str, String)>> {
    let component = format!("{}.wasm", name.replace('-', "_"));
    let fill = |text: &str| text.replace("{{name}}", name);
    let (features, lib): (&[&str], &str) = match template {
        Template::Http | Template::Ui => (&[], LIB_HTTP),
        Template::Storage => (&["storage"], LIB_STORAGE),
        Template::Events => (&["storage"], LIB_EVENTS),
    };
    let cargo = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\npalisade-sdk = {}\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n\n\
         # `cargo test` runs the handlers natively against the SDK's test host.\n\
         [dev-dependencies]\npalisade-sdk = {}\n\n\
         # A workspace of its own, wherever the directory is.\n[workspace]\n\n\
         [profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n",
        sdk.dependency(features),
        sdk.dependency(&[features, &["testing"]].concat()),
    );
    let mut capabilities = serde_json::json!({ "log": true });
    let endpoints = match template {
        Template::Http | Template::Ui => {
            serde_json::json!([{ "method": "GET", "path": "/hello/:name" }])
        }
        Template::Storage => {
            capabilities["storage"] = serde_json::json!({ "namespaces": ["counts"] });
            serde_json::json!([
                { "method": "POST", "path": "/hit/:page" },
                { "method": "GET", "path": "/count/:page" }
            ])
        }
        Template::Events => {
            capabilities["storage"] = serde_json::json!({ "namespaces": ["tickets"] });
            serde_json::json!([{ "method": "GET", "path": "/tickets/count" }])
        }
    };
    let mut manifest = serde_json::json!({
        "$schema": SCHEMA_URL,
        "id": id,
        "name": name,
        "publisher": "You",
        "version": "0.1.0",
        "runtime": "wasi-http@0.2",
        "component": component,
        "capabilities": capabilities,
        "api": { "endpoints": endpoints },
        "limits": { "timeout_ms": 5000, "memory_mb": 32 },
    });
    if template == Template::Ui {
        manifest["ui"] = serde_json::json!({ "entry": "index.html" });
    }
    if template == Template::Events {
        manifest["events"] = serde_json::json!([{ "topic": "ticket.*", "path": "/on/ticket" }]);
        manifest["schedules"] = serde_json::json!([{ "cron": "0 3 * * *", "path": "/nightly" }]);
    }
    let manifest = serde_json::to_string_pretty(&manifest)? + "\n";
    // What `palisade build` will check: the manifest must parse as publish parses it.
    palisade_bundle::Manifest::from_json(manifest.as_bytes())
        .with_context(|| format!("the manifest made for `{name}`"))?;
    let readme = format!(
        "# {name}\n\nA Palisade extension (`{id}`).\n\n\
         * `cargo test` runs its unit tests natively, the handlers against the SDK's test \
         host (`palisade_sdk::testing`: in-memory storage, secrets, egress, metrics, log).\n\
         * `palisade dev` runs it on a local platform and reloads it when a file changes.\n\
         * `palisade build` builds it for `wasm32-wasip2`, checks `manifest.json` and the \
         component's imports, packs `target/palisade/bundle.tar.zst` and prints its content hash.\n\
         * `palisade keygen`, `palisade sign target/palisade/bundle.tar.zst --key …`, then \
         `palisade publish` and `palisade install` (see the SDK guide, `docs/sdk.md`).\n"
    );
    let mut files = vec![
        ("Cargo.toml", cargo),
        ("rust-toolchain.toml", TOOLCHAIN.to_owned()),
        ("manifest.json", manifest),
        ("src/lib.rs", fill(lib)),
        ("README.md", readme),
        (".gitignore", "target/\n".to_owned()),
    ];
    if template == Template::Ui {
        files.extend([
            ("ui/index.html", fill(UI_INDEX)),
            ("ui/app.js", fill(UI_APP)),
            ("ui/vendor/frame.js", FRAME_JS.to_owned()),
            ("ui/vendor/protocol.js", PROTOCOL_JS.to_owned()),
        ]);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_sdk_version_is_the_sdk_crates_own() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/rust/Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["package"]["version"].as_str(), Some(SDK_VERSION));
    }

    #[test]
    fn names_that_cargo_or_the_id_refuse_are_refused() {
        for name in ["ok", "ticket-notes", "a1"] {
            check_name(name).unwrap();
        }
        for name in [
            "",
            "Upper",
            "1x",
            "under_score",
            "trailing-",
            "dot.ted",
            "../x",
        ] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn every_template_makes_a_valid_manifest_and_its_files() {
        let sdk = Sdk::Version("0.1.0".into());
        for template in [
            Template::Http,
            Template::Storage,
            Template::Ui,
            Template::Events,
        ] {
            let files = files("my-ext", "com.example.my-ext", template, &sdk).unwrap();
            let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
            assert!(paths.contains(&"src/lib.rs") && paths.contains(&"manifest.json"));
            assert_eq!(paths.contains(&"ui/index.html"), template == Template::Ui);
            let cargo = &files[0].1;
            assert!(cargo.contains("name = \"my-ext\""), "{cargo}");
            assert!(cargo.contains("version = \"0.1.0\""), "{cargo}");
            assert!(cargo.contains("\"testing\"] }"), "{cargo}");
            let manifest = &files[2].1;
            assert!(manifest.contains("\"$schema\""), "{manifest}");
            assert!(manifest.contains("my_ext.wasm"), "{manifest}");
        }
        let path = Sdk::Path(PathBuf::from("/src/palisade/sdk/rust"));
        assert_eq!(
            path.dependency(&["storage"]),
            "{ path = \"/src/palisade/sdk/rust\", features = [\"storage\"] }"
        );
        assert!(TOOLCHAIN.contains("wasm32-wasip2"));
    }
}
