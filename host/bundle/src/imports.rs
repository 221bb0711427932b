//! A component's imports, and the check that its manifest grants every one of them.

use wasmparser::{Encoding, Parser, Payload};

use crate::manifest::{Capabilities, CapabilityKey};

/// Why a component's imports are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The bytes are not a readable WebAssembly binary.
    #[error("cannot read the component: {0}")]
    Parse(String),
    /// The bytes are a core module, not a component.
    #[error(
        "the file is a core WebAssembly module, not a component; build for `wasm32-wasip2` or wrap it with `wasm-tools component new`"
    )]
    NotAComponent,
    /// An import a capability would cover, but the manifest does not grant it.
    #[error(
        "component imports `{interface}` but the manifest does not grant it; add `capabilities.{grant}` to the manifest"
    )]
    NotGranted {
        /// The imported interface, e.g. `palisade:extension/storage@0.1.0`.
        interface: String,
        /// The capability that grants it.
        grant: CapabilityKey,
    },
    /// A `wasi:sockets` import.
    #[error(
        "component imports `{0}`: sockets are never linked; use `wasi:http/outgoing-handler` with `capabilities.http`"
    )]
    Sockets(String),
    /// An import the platform does not provide at all.
    #[error(
        "component imports `{0}`, which the platform does not provide (supported: WASI 0.2.x clocks, random, io, cli, filesystem, http and palisade:extension 0.1.x and 0.2.x)"
    )]
    Unknown(String),
}

/// Every released version of the `palisade:extension` WIT package, oldest first; the last
/// is the one in `wit/`. The runner links them all, and a component may import any patch
/// version of one of them (`docs/wit.md#versions`).
pub const WIT_VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];

/// The names of the component's top-level imports, in binary order.
pub fn component_imports(component: &[u8]) -> Result<Vec<String>, ImportError> {
    let mut imports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        match payload.map_err(|e| ImportError::Parse(e.to_string()))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(ImportError::NotAComponent);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(|e| ImportError::Parse(e.to_string()))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(imports)
}

/// What an import needs to be linked.
#[derive(Debug, PartialEq, Eq)]
enum Requirement {
    /// Linked for everyone.
    Always,
    /// Linked when the capability is granted.
    Grant(CapabilityKey),
}

/// Checks that `granted` covers every one of `imports`; the error names the first import
/// that is not covered.
pub fn check_imports(imports: &[String], granted: &Capabilities) -> Result<(), ImportError> {
    for import in imports {
        match requirement(import)? {
            Requirement::Always => {}
            Requirement::Grant(key) if granted.requests(key) => {}
            Requirement::Grant(key) => {
                return Err(ImportError::NotGranted {
                    interface: import.clone(),
                    grant: key,
                });
            }
        }
    }
    Ok(())
}

const WASI_CLI: [&str; 10] = [
    "environment",
    "exit",
    "stdin",
    "stdout",
    "stderr",
    "terminal-input",
    "terminal-output",
    "terminal-stdin",
    "terminal-stdout",
    "terminal-stderr",
];

fn requirement(import: &str) -> Result<Requirement, ImportError> {
    let unknown = || ImportError::Unknown(import.to_owned());
    let (name, version) = import.split_once('@').ok_or_else(unknown)?;
    let (package, interface) = name.split_once('/').ok_or_else(unknown)?;
    let version = semver::Version::parse(version).map_err(|_| unknown())?;
    let in_series = |minor| version.major == 0 && version.minor == minor && version.pre.is_empty();

    if package == "wasi:sockets" {
        return Err(ImportError::Sockets(import.to_owned()));
    }
    if package == "palisade:extension" {
        let released = WIT_VERSIONS.iter().any(|released| {
            semver::Version::parse(released).is_ok_and(|released| in_series(released.minor))
        });
        if !released {
            return Err(unknown());
        }
        if interface == "context" {
            return Ok(Requirement::Always);
        }
    } else if !in_series(2) {
        return Err(unknown());
    }
    if let Some(key) = CapabilityKey::for_interface(name) {
        return Ok(Requirement::Grant(key));
    }
    match (package, interface) {
        ("wasi:clocks" | "wasi:random" | "wasi:io", _) => Ok(Requirement::Always),
        ("wasi:cli", i) if WASI_CLI.contains(&i) => Ok(Requirement::Always),
        ("wasi:filesystem", "types" | "preopens") => Ok(Requirement::Always),
        ("wasi:http", "types") => Ok(Requirement::Always),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::CAPABILITIES;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What a Rust `wasm32-wasip2` HTTP component typically imports.
    const BASELINE: [&str; 14] = [
        "wasi:cli/environment@0.2.3",
        "wasi:cli/exit@0.2.3",
        "wasi:cli/stdin@0.2.3",
        "wasi:cli/stdout@0.2.3",
        "wasi:cli/stderr@0.2.3",
        "wasi:cli/terminal-stdout@0.2.0",
        "wasi:clocks/wall-clock@0.2.3",
        "wasi:clocks/monotonic-clock@0.2.12",
        "wasi:io/error@0.2.3",
        "wasi:io/streams@0.2.3",
        "wasi:random/random@0.2.3",
        "wasi:filesystem/types@0.2.3",
        "wasi:filesystem/preopens@0.2.3",
        "wasi:http/types@0.2.12",
    ];

    #[test]
    fn baseline_and_context_need_no_grant() {
        let mut imports = names(&BASELINE);
        imports.push("palisade:extension/context@0.1.0".into());
        imports.push("palisade:extension/context@0.1.7".into());
        imports.push("palisade:extension/context@0.2.0".into());
        check_imports(&imports, &Capabilities::none()).unwrap();
    }

    #[test]
    fn capability_imports_need_their_grant() {
        // Every interface of the capability table, with a version.
        let cases: Vec<(String, CapabilityKey)> = CAPABILITIES
            .iter()
            .flat_map(|spec| {
                let version = if spec.interfaces[0].starts_with("wasi:") {
                    "0.2.12"
                } else {
                    "0.1.3"
                };
                spec.interfaces
                    .iter()
                    .map(move |interface| (format!("{interface}@{version}"), spec.key))
            })
            .collect();
        let all = crate::manifest::everything();
        for (import, key) in &cases {
            let (import, key) = (import.as_str(), *key);
            let imports = names(&[import]);
            check_imports(&imports, &all).unwrap();
            let without = all.restrict_to(
                &CapabilityKey::ALL
                    .into_iter()
                    .filter(|k| *k != key)
                    .collect::<Vec<_>>(),
            );
            let err = check_imports(&imports, &without).unwrap_err();
            assert_eq!(
                err,
                ImportError::NotGranted {
                    interface: import.to_owned(),
                    grant: key
                }
            );
        }
    }

    /// What a JavaScript component built with componentize-js 0.23.0 (StarlingMonkey)
    /// without its `http` feature imports (`guests/js-hello`): the engine's WASI 0.2.10
    /// beside the 0.2.12 of the adapter it is wrapped with, and its world's imports.
    const COMPONENTIZE_JS: [&str; 19] = [
        "palisade:extension/context@0.2.0",
        "palisade:extension/log@0.2.0",
        "wasi:io/poll@0.2.12",
        "wasi:clocks/monotonic-clock@0.2.12",
        "wasi:io/error@0.2.12",
        "wasi:io/streams@0.2.12",
        "wasi:http/types@0.2.10",
        "wasi:cli/stdin@0.2.12",
        "wasi:cli/stdout@0.2.12",
        "wasi:cli/stderr@0.2.12",
        "wasi:cli/terminal-input@0.2.12",
        "wasi:cli/terminal-output@0.2.12",
        "wasi:cli/terminal-stdin@0.2.12",
        "wasi:cli/terminal-stdout@0.2.12",
        "wasi:cli/terminal-stderr@0.2.12",
        "wasi:clocks/wall-clock@0.2.12",
        "wasi:filesystem/types@0.2.12",
        "wasi:filesystem/preopens@0.2.12",
        "wasi:random/random@0.2.12",
    ];

    #[test]
    fn a_javascript_component_needs_the_grants_of_its_world_only() {
        let imports = names(&COMPONENTIZE_JS);
        check_imports(&imports, &Capabilities::default()).unwrap();
        assert_eq!(
            check_imports(&imports, &Capabilities::none()).unwrap_err(),
            ImportError::NotGranted {
                interface: "palisade:extension/log@0.2.0".into(),
                grant: CapabilityKey::Log,
            }
        );
        // With componentize-js's `http` feature on, `fetch` needs the egress grant.
        let mut with_fetch = imports.clone();
        with_fetch.push("wasi:http/outgoing-handler@0.2.10".into());
        assert_eq!(
            check_imports(&with_fetch, &Capabilities::default()).unwrap_err(),
            ImportError::NotGranted {
                interface: "wasi:http/outgoing-handler@0.2.10".into(),
                grant: CapabilityKey::Http,
            }
        );
        check_imports(&with_fetch, &crate::manifest::everything()).unwrap();
    }

    #[test]
    fn not_granted_message_names_interface_and_key() {
        let err = check_imports(
            &names(&["palisade:extension/storage@0.1.0"]),
            &Capabilities::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "component imports `palisade:extension/storage@0.1.0` but the manifest does not grant it; add `capabilities.storage` to the manifest"
        );
    }

    #[test]
    fn sockets_are_refused() {
        let err = check_imports(
            &names(&["wasi:sockets/tcp@0.2.0"]),
            &Capabilities::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Sockets(_)));
        assert!(err.to_string().contains("sockets are never linked"));
    }

    #[test]
    fn unknown_imports_are_refused() {
        for import in [
            "wasi:http/types@0.3.0",
            "wasi:io/streams@0.2.0-rc-2023-11-10",
            "wasi:cli/run@0.2.0",
            "wasi:filesystem/other@0.2.0",
            "wasi:keyvalue/store@0.2.0",
            "palisade:extension/storage@0.3.0",
            "palisade:extension/admin@0.1.0",
            "acme:evil/backdoor@1.0.0",
            "wasi:http/types",
            "plain-function",
        ] {
            let err = check_imports(&names(&[import]), &Capabilities::default()).unwrap_err();
            assert_eq!(err, ImportError::Unknown(import.to_owned()), "{import}");
        }
    }

    #[test]
    fn lists_top_level_imports_of_a_component() {
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdout@0.2.0" (instance))
                (import "palisade:extension/storage@0.1.0" (instance))
                (component $inner
                    (import "nested:only/inner@1.0.0" (instance))
                )
                (core module $m)
            )"#,
        )
        .unwrap();
        let imports = component_imports(&wasm).unwrap();
        assert_eq!(
            imports,
            ["wasi:cli/stdout@0.2.0", "palisade:extension/storage@0.1.0"]
        );
        let err = check_imports(&imports, &Capabilities::default()).unwrap_err();
        assert!(matches!(
            err,
            ImportError::NotGranted {
                grant: CapabilityKey::Storage,
                ..
            }
        ));
    }

    #[test]
    fn refuses_core_modules_and_garbage() {
        let module = wat::parse_str("(module)").unwrap();
        assert_eq!(component_imports(&module), Err(ImportError::NotAComponent));
        assert!(matches!(
            component_imports(b"garbage"),
            Err(ImportError::Parse(_))
        ));
    }
}
