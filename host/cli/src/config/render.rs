//! `palisade config default`: the whole configuration file with its default values and a
//! comment on every key, generated from the types of [`OperatorConfig`] (their doc
//! comments, through their JSON Schema) and from its `Default`.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::OperatorConfig;

/// Width the comments are wrapped to.
const WIDTH: usize = 88;

const HEADER: &str = "\
# Palisade operator configuration (`--config FILE`, or PALISADE_CONFIG).
# Every key is optional: the values below are the defaults, and a key left out keeps its
# default. Flags of `palisade up`, `runner` and `gateway` override the keys of the same
# names. Printed by `palisade config default`; `palisade config check FILE` checks a file.

";

/// The default configuration file.
pub(crate) fn render_default() -> String {
    let schema = schemars::schema_for!(OperatorConfig);
    let root = schema.as_value();
    let defaults = match toml::Value::try_from(OperatorConfig::default()) {
        Ok(toml::Value::Table(table)) => table,
        // The defaults are plain data; this only guards the shape.
        _ => toml::Table::new(),
    };
    let mut out = String::from(HEADER);
    render_table(&mut out, root, root, &defaults, &mut Vec::new());
    out
}

/// The keys of the table `node` (plain values first, then the tables under it), in the
/// order of the type's fields (the order of its serialized defaults, then the keys unset by
/// default).
fn render_table(
    out: &mut String,
    root: &Json,
    node: &Json,
    defaults: &toml::Table,
    path: &mut Vec<String>,
) {
    let Some(schema) = resolve(root, node)
        .get("properties")
        .and_then(Json::as_object)
    else {
        return;
    };
    let properties: Vec<(&String, &Json)> = defaults
        .keys()
        .chain(schema.keys().filter(|key| !defaults.contains_key(*key)))
        .filter_map(|key| schema.get_key_value(key))
        .collect();
    for &(key, property) in &properties {
        if is_table(root, property) {
            continue;
        }
        comment(out, &description(root, property));
        match defaults.get(key) {
            Some(value) => {
                let _ = writeln!(out, "{key} = {value}");
            }
            None => {
                let _ = writeln!(out, "# {key} = (unset)");
            }
        }
        out.push('\n');
    }
    for &(key, property) in &properties {
        if !is_table(root, property) {
            continue;
        }
        path.push(key.clone());
        let _ = writeln!(out, "[{}]", path.join("."));
        comment(out, &description(root, property));
        out.push('\n');
        let empty = toml::Table::new();
        let inner = defaults
            .get(key)
            .and_then(toml::Value::as_table)
            .unwrap_or(&empty);
        render_table(out, root, property, inner, path);
        path.pop();
    }
}

/// The schema `node` refers to (`$ref` followed).
fn resolve<'a>(root: &'a Json, node: &'a Json) -> &'a Json {
    node.get("$ref")
        .and_then(Json::as_str)
        .and_then(|reference| reference.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
        .unwrap_or(node)
}

fn is_table(root: &Json, node: &Json) -> bool {
    resolve(root, node).get("properties").is_some()
}

/// The key's own description, else its type's.
fn description(root: &Json, node: &Json) -> String {
    [node, resolve(root, node)]
        .into_iter()
        .find_map(|n| n.get("description").and_then(Json::as_str))
        .unwrap_or_default()
        .to_owned()
}

/// `text` as `# ` lines of at most [`WIDTH`] columns, paragraphs kept.
fn comment(out: &mut String, text: &str) {
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("#\n");
        }
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        if line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_comment_and_every_table_a_header() {
        let text = render_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_key = !line.starts_with('#') && line.contains(" = ");
            let is_unset = line.starts_with("# ") && line.ends_with(" = (unset)");
            if is_key || is_unset || line.starts_with('[') {
                let above = if line.starts_with('[') {
                    lines.get(i + 1)
                } else {
                    i.checked_sub(1).and_then(|j| lines.get(j))
                };
                let above = above.copied().unwrap_or_default();
                assert!(
                    above.starts_with("# ") && !above.ends_with("(unset)"),
                    "`{line}` has no comment"
                );
            }
        }
        for table in [
            "[runtime]",
            "[runtime.egress]",
            "[runtime.metrics]",
            "[runtime.cache]",
            "[storage]",
            "[runner]",
            "[gateway]",
            "[policy]",
            "[policy.rate_limit]",
            "[policy.idempotency]",
            "[registry]",
            "[ui]",
        ] {
            assert!(lines.contains(&table), "no {table}");
        }
        assert!(lines.iter().all(|line| line.chars().count() <= WIDTH + 20));
    }

    #[test]
    fn the_operations_page_shows_the_default_file() {
        let page = include_str!("../../../../docs/operations.md");
        let start = "<!-- palisade config default -->\n```toml\n";
        let from = page
            .find(start)
            .expect("docs/operations.md has no default file")
            + start.len();
        let to = from + page[from..].find("```\n").expect("the block ends");
        assert!(
            page[from..to] == render_default(),
            "docs/operations.md shows another default file than `palisade config default` prints; \
             replace the block with its output"
        );
    }
}
