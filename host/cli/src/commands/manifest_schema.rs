//! `manifest.json` checked against the manifest's JSON Schema (`docs/manifest.schema.json`,
//! the file the `$schema` of a new manifest names), before the parser publish uses reads
//! it: every place that does not conform is named at once, by its JSON pointer.

use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

/// The schema, as this binary was built with it.
const SCHEMA: &str = include_str!("../../../../docs/manifest.schema.json");

/// The compiled schema; `None` if the schema this binary carries does not compile (a test
/// keeps that from happening).
static VALIDATOR: LazyLock<Option<Validator>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA).ok()?;
    jsonschema::validator_for(&schema).ok()
});

/// Every way `manifest` does not conform to the schema, one line each
/// (`/capabilities/storage: "namespaces" is a required property`); empty when it conforms.
pub(crate) fn problems(manifest: &Value) -> Vec<String> {
    let Some(validator) = VALIDATOR.as_ref() else {
        return vec!["the manifest schema built into this binary does not compile".to_owned()];
    };
    validator
        .iter_errors(manifest)
        .map(|error| {
            let path = error.instance_path().as_str();
            let at = if path.is_empty() { "/" } else { path };
            format!("{at}: {error}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_compiles() {
        assert!(VALIDATOR.is_some());
    }

    #[test]
    fn every_sample_manifest_conforms() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut checked = 0;
        for workspace in ["guests", "tests/guests"] {
            for entry in std::fs::read_dir(root.join(workspace)).unwrap() {
                let path = entry.unwrap().path().join("manifest.json");
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let manifest: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    problems(&manifest),
                    Vec::<String>::new(),
                    "{}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "{checked} manifests checked");
    }

    #[test]
    fn each_problem_is_named_by_its_place() {
        let manifest = serde_json::json!({
            "id": "com.example.x",
            "name": "X",
            "publisher": "You",
            "version": "0.1.0",
            "runtime": "wasi-http@0.2",
            "component": "x.wasm",
            "capabilities": { "storage": { "max_bytes": 10 }, "metrics": "yes" },
            "api": { "endpoints": [] },
            "colour": "blue"
        });
        let problems = problems(&manifest);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("/capabilities/storage:") && p.contains("namespaces")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("/capabilities/metrics:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("colour")),
            "{problems:?}"
        );
    }
}
