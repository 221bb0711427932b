//! The documentation points only at things that exist: every relative link in `README.md`
//! and `docs/**/*.md` resolves to a file or directory, and every inline code span that
//! names a repository path (`host/…`, `sdk/…`, `guests/…`, `tests/…`, `wit/…`, `docs/…`,
//! `.ci/…`, or a top-level file such as `Cargo.toml`) names one that is there.
//!
//! Standard library only, so that it also runs on its own:
//! `rustc --edition 2024 --test tests/docs.rs -o /tmp/docs-check && /tmp/docs-check`
//! from the repository root.

#![allow(clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

/// Top-level directories whose names start a repository path in a code span.
const PATH_PREFIXES: &[&str] = &[
    "host/", "sdk/", "guests/", "tests/", "wit/", "docs/", ".ci/",
];

/// Top-level files a code span may name on their own.
const TOP_LEVEL_FILES: &[&str] = &["Cargo.toml", "justfile", "rust-toolchain.toml"];

/// Characters that make a code span a pattern or a placeholder rather than a path.
const PLACEHOLDER_CHARS: &[char] = &['*', '{', '<', '…'];

/// The repository root: the parent of this package's directory under cargo, the current
/// directory when compiled on its own with rustc.
fn repository_root() -> PathBuf {
    match option_env!("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(dir)
            .parent()
            .expect("tests/ lives inside the repository")
            .to_path_buf(),
        None => std::env::current_dir().expect("current directory"),
    }
}

/// `README.md` and every `*.md` under `docs/`, sorted.
fn documentation_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut pending = vec![root.join("docs")];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What a document points at, with the 1-based line it is on.
#[derive(Debug, PartialEq, Eq)]
enum Reference {
    /// The target of a relative markdown link, as written.
    Link { line: usize, target: String },
    /// The content of an inline code span that names a repository path, as written.
    Path { line: usize, path: String },
}

/// Whether a line opens or closes a fenced code block; returns the fence's marker.
fn fence_marker(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    for marker in ["```", "~~~"] {
        if trimmed.starts_with(marker) {
            let run = trimmed
                .chars()
                .take_while(|&c| marker.starts_with(c))
                .count();
            return Some(&trimmed[..run]);
        }
    }
    None
}

/// A paragraph-like run of lines: consecutive non-blank lines, all inside or all outside
/// a fenced code block. `first_line` is 1-based.
struct Block {
    first_line: usize,
    text: String,
    fenced: bool,
}

/// Splits a document into blocks, so that a code span may continue on the next line of
/// its paragraph but never runs into another paragraph or into a fence.
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open_fence: Option<String> = None;
    let mut current: Option<Block> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let marker = fence_marker(line);
        let fence_line = match (&open_fence, marker) {
            (None, Some(marker)) => {
                open_fence = Some(marker.to_string());
                true
            }
            (Some(open), Some(marker))
                if marker.starts_with(open.as_str())
                    && line.trim().trim_start_matches(marker).is_empty() =>
            {
                open_fence = None;
                true
            }
            _ => false,
        };
        let fenced = open_fence.is_some() || fence_line;
        if line.trim().is_empty() || fence_line {
            blocks.extend(current.take());
            if fence_line {
                blocks.push(Block {
                    first_line: number,
                    text: line.to_string(),
                    fenced: true,
                });
            }
            continue;
        }
        match &mut current {
            Some(block) if block.fenced == fenced => {
                block.text.push('\n');
                block.text.push_str(line);
            }
            _ => {
                blocks.extend(current.take());
                current = Some(Block {
                    first_line: number,
                    text: line.to_string(),
                    fenced,
                });
            }
        }
    }
    blocks.extend(current);
    blocks
}

/// The inline code spans of a block as (byte offset of the span, content), and the
/// block's text with every code span blanked out (so that a link inside one is not taken
/// for a link). A backtick run without a closing run of the same length is literal text.
fn code_spans(text: &str) -> (Vec<(usize, String)>, String) {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut blanked = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let content_start = i + run;
        let mut j = content_start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let content = text[content_start..end].replace('\n', " ");
                let content = match content.strip_prefix(' ').and_then(|c| c.strip_suffix(' ')) {
                    Some(inner) if !inner.trim().is_empty() => inner.to_string(),
                    _ => content,
                };
                spans.push((i, content));
                blanked.push_str(&text[copied..i]);
                for c in text[i..end + run].chars() {
                    match c {
                        '\n' => blanked.push('\n'),
                        // As many bytes as the character, so that offsets stay valid.
                        _ => blanked.extend(std::iter::repeat_n(' ', c.len_utf8())),
                    }
                }
                i = end + run;
                copied = i;
            }
            None => i = content_start,
        }
    }
    blanked.push_str(&text[copied..]);
    (spans, blanked)
}

/// The targets of the inline links and images (`[text](target)`, `[text](<target> "title")`)
/// and of the link reference definitions (`[label]: target`) in a text, with byte offsets.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("](") {
        let start = from + found + 2;
        let rest = &text[start..];
        let mut depth = 0usize;
        let mut end = None;
        for (k, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(k);
                    break;
                }
                ')' => depth -= 1,
                '\n' => break,
                _ => {}
            }
        }
        if let Some(end) = end {
            let inner = rest[..end].trim();
            let target = match inner.strip_prefix('<') {
                Some(angled) => angled.split('>').next().unwrap_or_default(),
                None => inner.split_whitespace().next().unwrap_or_default(),
            };
            targets.push((start, target.to_string()));
        }
        from = start;
    }
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(label_end) = trimmed.strip_prefix('[').and_then(|l| l.find("]:")) {
            let target = trimmed[1 + label_end + 2..].split_whitespace().next();
            if let Some(target) = target {
                let target = target.trim_start_matches('<').trim_end_matches('>');
                targets.push((offset, target.to_string()));
            }
        }
        offset += line.len();
    }
    targets
}

/// Whether a link target is checked: relative, not an external address and not only an
/// anchor in the same page.
fn is_relative_link(target: &str) -> bool {
    !(target.is_empty()
        || target.starts_with('#')
        || target.starts_with("http:")
        || target.starts_with("https:")
        || target.starts_with("mailto:"))
}

/// The repository path a code span names, if it names one: the span's first word when
/// it starts with a top-level directory, or a top-level file on its own; without a
/// trailing `:line` (`:12`, `:12-30`, `:12:5`) or `#…` suffix. Patterns and placeholders
/// name no path.
fn repository_path(span: &str) -> Option<String> {
    let word = span.split_whitespace().next()?;
    let names_path = PATH_PREFIXES.iter().any(|prefix| word.starts_with(prefix))
        || TOP_LEVEL_FILES.contains(&word);
    if !names_path || word.contains(PLACEHOLDER_CHARS) {
        return None;
    }
    let mut path = word.split('#').next().unwrap_or_default();
    while let Some((head, tail)) = path.rsplit_once(':') {
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '-') {
            path = head;
        } else {
            break;
        }
    }
    Some(path.to_string())
}

/// Everything a document points at.
fn references(text: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    for block in blocks(text) {
        let line_of = |offset: usize| block.first_line + block.text[..offset].matches('\n').count();
        let (spans, blanked) = if block.fenced {
            (Vec::new(), block.text.clone())
        } else {
            code_spans(&block.text)
        };
        for (offset, target) in link_targets(&blanked) {
            if is_relative_link(&target) {
                found.push(Reference::Link {
                    line: line_of(offset),
                    target,
                });
            }
        }
        for (offset, span) in spans {
            if let Some(path) = repository_path(&span) {
                found.push(Reference::Path {
                    line: line_of(offset),
                    path,
                });
            }
        }
    }
    found
}

/// Decodes `%XX` escapes in a link target.
fn percent_decode(target: &str) -> String {
    let bytes = target.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is missing in one document, one line per failure.
fn check_file(root: &Path, file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let dir = file.parent().expect("a file has a parent");
    let mut failures = Vec::new();
    for reference in references(&text) {
        match reference {
            Reference::Link { line, target } => {
                let path = percent_decode(target.split(['#', '?']).next().unwrap_or_default());
                if !path.is_empty() && !dir.join(&path).exists() {
                    failures.push(format!(
                        "{shown}:{line}: link target `{target}` does not exist"
                    ));
                }
            }
            Reference::Path { line, path } => {
                if !root.join(&path).exists() {
                    failures.push(format!("{shown}:{line}: path `{path}` does not exist"));
                }
            }
        }
    }
    failures
}

#[test]
fn relative_links_and_named_paths_exist() {
    let root = repository_root();
    assert!(
        root.join("README.md").is_file() && root.join("docs").is_dir(),
        "{} is not the repository root (run from there when compiling with rustc)",
        root.display()
    );
    let files = documentation_files(&root);
    let failures: Vec<String> = files.iter().flat_map(|f| check_file(&root, f)).collect();
    assert!(
        failures.is_empty(),
        "{} broken reference(s) in the documentation:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn finds_links_outside_code_spans() {
    let text = "See [the gateway](gateway.md#caches) and `[not](a-link.md)`,\n\
                ![diagram](img/flow.svg \"Flow\"), [site](https://example.com), [top](#top)\n\
                and [angled](<with space.md>).\n\n[ref]: ../host/cli/src/main.rs\n";
    let links: Vec<String> = references(text)
        .into_iter()
        .filter_map(|r| match r {
            Reference::Link { target, .. } => Some(target),
            Reference::Path { .. } => None,
        })
        .collect();
    assert_eq!(
        links,
        [
            "gateway.md#caches",
            "img/flow.svg",
            "with space.md",
            "../host/cli/src/main.rs"
        ]
    );
}

#[test]
fn finds_paths_in_code_spans_but_not_in_fences() {
    let text = "Read `host/gateway/src/lib.rs:12`, `wit/worlds.wit#L3` and `Cargo.toml`;\n\
                not `host/*/Cargo.toml`, `docs/{name}.md`, `cargo test` or `hosts/x`.\n\
                A span may wrap: `sdk/rust/src/lib.rs\nmore` ``tests/docs.rs``.\n\n\
                ```\n`host/in/a/fence.rs`\n```\n\n~~~toml\n`guests/x`\n~~~\n`.ci/run`\n";
    let paths: Vec<(usize, String)> = references(text)
        .into_iter()
        .filter_map(|r| match r {
            Reference::Path { line, path } => Some((line, path)),
            Reference::Link { .. } => None,
        })
        .collect();
    let expected = [
        (1, "host/gateway/src/lib.rs"),
        (1, "wit/worlds.wit"),
        (1, "Cargo.toml"),
        (3, "sdk/rust/src/lib.rs"),
        (4, "tests/docs.rs"),
        (13, ".ci/run"),
    ];
    let expected: Vec<(usize, String)> = expected
        .iter()
        .map(|(line, path)| (*line, path.to_string()))
        .collect();
    assert_eq!(paths, expected);
}

#[test]
fn lines_stay_right_after_wide_characters_in_code_spans() {
    let text = "A `…` and `ü`\nthen [next](next.md) and `host/x/…`.\n";
    let found = references(text);
    assert_eq!(
        found,
        [Reference::Link {
            line: 2,
            target: "next.md".to_string()
        }]
    );
}

#[test]
fn decodes_percent_escapes() {
    assert_eq!(percent_decode("a%20b.md"), "a b.md");
    assert_eq!(percent_decode("100%"), "100%");
}
