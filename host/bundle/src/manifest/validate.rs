//! Value checks of a parsed manifest. Each check reports the path of the field it refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::headers::{MAX_DECLARED_HEADERS, is_header_token, reserved_header};
use super::origin::AllowedOrigin;
use super::{Capabilities, Limits, Manifest, ManifestError, RUNTIME_WASI_HTTP};
use crate::paths::check_relative_path;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex compiles")
}

static ID: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$"));
static NAMESPACE: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z0-9][a-z0-9_.-]{0,62}$"));
static SECRET: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"));
static PARAM: LazyLock<Regex> = LazyLock::new(|| regex(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"));
static HOOK: LazyLock<Regex> = LazyLock::new(|| regex(r"^[a-z][a-z0-9_.-]{0,63}$"));

const MAX_ID_LEN: usize = 128;
const MAX_TEXT_LEN: usize = 256;
const MAX_URL_PATH_LEN: usize = 1024;
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The endpoint method that stands for every method.
const ANY_METHOD: &str = "*";

type Check = Result<(), ManifestError>;

fn fail(path: impl Into<String>, message: impl Into<String>) -> Check {
    Err(ManifestError::new(path, message))
}

impl Manifest {
    /// Checks every value of the manifest; the error names the first offending field.
    pub fn validate(&self) -> Check {
        check_id(&self.id)?;
        check_text("name", &self.name)?;
        check_text("publisher", &self.publisher)?;
        if self.runtime != RUNTIME_WASI_HTTP {
            return fail(
                "runtime",
                format!(
                    "unsupported runtime `{}`; expected `{RUNTIME_WASI_HTTP}`",
                    self.runtime
                ),
            );
        }
        check_component(&self.component)?;
        check_capabilities(&self.capabilities)?;
        check_endpoints(self)?;
        check_declared_headers("api.headers.request", &self.api.headers.request)?;
        check_declared_headers("api.headers.response", &self.api.headers.response)?;
        if let Some(ui) = &self.ui {
            if let Err(why) = check_relative_path(&ui.entry) {
                return fail(
                    "ui.entry",
                    format!("`{}` is not a safe relative path: {why}", ui.entry),
                );
            }
            check_names(
                "ui.hooks",
                &ui.hooks,
                &HOOK,
                "a lowercase name like `settings`",
            )?;
        }
        check_events(self)?;
        check_schedules(self)?;
        check_limits(&self.limits)
    }
}

pub(super) fn check_id(id: &str) -> Check {
    if id.len() > MAX_ID_LEN {
        return fail("id", format!("longer than {MAX_ID_LEN} characters"));
    }
    if !ID.is_match(id) {
        return fail(
            "id",
            format!("`{id}` is not a lowercase reverse-domain id like `com.example.hello`"),
        );
    }
    Ok(())
}

fn check_text(path: &str, value: &str) -> Check {
    if value.trim().is_empty() {
        return fail(path, "must not be empty");
    }
    if value.chars().count() > MAX_TEXT_LEN {
        return fail(path, format!("longer than {MAX_TEXT_LEN} characters"));
    }
    if value.chars().any(char::is_control) {
        return fail(path, "must not contain control characters");
    }
    Ok(())
}

fn check_component(component: &str) -> Check {
    if let Err(why) = check_relative_path(component) {
        return fail(
            "component",
            format!("`{component}` is not a safe relative path: {why}"),
        );
    }
    if !component.ends_with(".wasm") {
        return fail("component", format!("`{component}` must end in `.wasm`"));
    }
    if component.starts_with("ui/") {
        return fail(
            "component",
            "the component cannot live under `ui/`, which is served publicly",
        );
    }
    Ok(())
}

/// Checks that every entry of `values` matches `pattern` and that none repeats.
fn check_names(path: &str, values: &[String], pattern: &Regex, expected: &str) -> Check {
    let mut seen = BTreeSet::new();
    for (i, value) in values.iter().enumerate() {
        if !pattern.is_match(value) {
            return fail(
                format!("{path}[{i}]"),
                format!("`{value}` is not {expected}"),
            );
        }
        if !seen.insert(value.as_str()) {
            return fail(format!("{path}[{i}]"), format!("`{value}` is listed twice"));
        }
    }
    Ok(())
}

fn check_capabilities(caps: &Capabilities) -> Check {
    if let Some(storage) = &caps.storage {
        if storage.namespaces.is_empty() {
            return fail(
                "capabilities.storage.namespaces",
                "must name at least one namespace",
            );
        }
        check_names(
            "capabilities.storage.namespaces",
            &storage.namespaces,
            &NAMESPACE,
            "a namespace (`[a-z0-9][a-z0-9_.-]`, at most 63 characters)",
        )?;
        if storage.max_bytes == Some(0) {
            return fail("capabilities.storage.max_bytes", "must be positive");
        }
    }
    check_names(
        "capabilities.secrets",
        &caps.secrets,
        &SECRET,
        "a secret name (`[A-Za-z_][A-Za-z0-9_]`, at most 128 characters)",
    )?;
    if let Some(http) = &caps.http {
        if http.allow.is_empty() {
            return fail(
                "capabilities.http.allow",
                "an empty allow-list grants nothing; list origins or remove `capabilities.http`",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, entry) in http.allow.iter().enumerate() {
            let path = format!("capabilities.http.allow[{i}]");
            let origin = AllowedOrigin::parse(entry)
                .map_err(|e| ManifestError::new(&path, e.to_string()))?;
            // `https://h` and `https://h:443` allow the same requests.
            let port = origin.effective_port();
            let key = (origin.scheme, origin.host, origin.wildcard, port);
            if !seen.insert(key) {
                return fail(path, format!("`{entry}` is listed twice"));
            }
        }
    }
    Ok(())
}

/// Checks a URL path; `template` says whether `:name` segments and a last `*name` segment
/// are allowed. Returns the path's shape (parameters replaced by `:`, the wildcard by `*`),
/// used to find endpoints that collide.
fn check_url_path(path: &str, template: bool) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    if path.len() > MAX_URL_PATH_LEN {
        return Err(format!("longer than {MAX_URL_PATH_LEN} characters"));
    }
    if path == "/" {
        return Ok(path.to_owned());
    }
    let mut shape = String::new();
    let mut names = BTreeSet::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        shape.push('/');
        if segment.is_empty() {
            return Err(format!(
                "`{path}` has an empty segment (`//` or a trailing `/`)"
            ));
        }
        let (sigil, name) = if let Some(name) = segment.strip_prefix(':') {
            if !template {
                return Err(format!("`{path}` cannot have `:param` segments here"));
            }
            (':', name)
        } else if let Some(name) = segment.strip_prefix('*').filter(|_| template) {
            if i != last {
                return Err(format!(
                    "`{path}` has `*{name}` before its last segment; a `*name` segment \
                     matches the rest of the path, so it can only be the last one"
                ));
            }
            ('*', name)
        } else {
            if segment == "." || segment == ".." {
                return Err(format!("`{path}` has a `.` or `..` segment"));
            }
            if let Some(c) = segment.chars().find(|c| !is_path_char(*c)) {
                return Err(format!(
                    "`{path}` contains `{c}`, which is not allowed in a path"
                ));
            }
            shape.push_str(segment);
            continue;
        };
        if !PARAM.is_match(name) {
            return Err(format!(
                "`{sigil}{name}` is not a valid parameter name (`[A-Za-z_][A-Za-z0-9_]*`)"
            ));
        }
        if !names.insert(name) {
            return Err(format!("parameter `{name}` appears twice"));
        }
        shape.push(sigil);
    }
    Ok(shape)
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c)
}

fn check_endpoints(manifest: &Manifest) -> Check {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, endpoint) in manifest.api.endpoints.iter().enumerate() {
        let base = format!("api.endpoints[{i}]");
        if endpoint.method != ANY_METHOD && !METHODS.contains(&endpoint.method.as_str()) {
            return fail(
                format!("{base}.method"),
                format!(
                    "`{}` is not one of {}, or `{ANY_METHOD}` for every method",
                    endpoint.method,
                    METHODS.join(", ")
                ),
            );
        }
        let shape = check_url_path(&endpoint.path, true)
            .map_err(|message| ManifestError::new(format!("{base}.path"), message))?;
        if let Some(first) = seen.insert((endpoint.method.clone(), shape), i) {
            return fail(
                base,
                format!(
                    "`{} {}` matches the same requests as api.endpoints[{first}]",
                    endpoint.method, endpoint.path
                ),
            );
        }
    }
    Ok(())
}

/// Checks the header names of one direction of `api.headers` (already lower case).
fn check_declared_headers(path: &str, names: &[String]) -> Check {
    if names.len() > MAX_DECLARED_HEADERS {
        return fail(
            path,
            format!(
                "declares {} headers; at most {MAX_DECLARED_HEADERS} are allowed",
                names.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let field = format!("{path}[{i}]");
        if !is_header_token(name) {
            return fail(field, format!("`{name}` is not an HTTP header name"));
        }
        if let Some(why) = reserved_header(name) {
            return fail(field, format!("`{name}` can never be declared: {why}"));
        }
        if !seen.insert(name.as_str()) {
            return fail(
                field,
                format!("`{name}` is listed twice (header names ignore case)"),
            );
        }
    }
    Ok(())
}

fn check_events(manifest: &Manifest) -> Check {
    let mut topics = BTreeSet::new();
    for (i, event) in manifest.events.iter().enumerate() {
        if let Err(error) = super::TopicPattern::parse(&event.topic) {
            return fail(
                format!("events[{i}].topic"),
                format!(
                    "`{}` {error}; a topic pattern looks like `ticket.created`, `ticket.*` or `billing.#`",
                    event.topic
                ),
            );
        }
        if !topics.insert(event.topic.as_str()) {
            return fail(
                format!("events[{i}].topic"),
                format!("`{}` is subscribed twice", event.topic),
            );
        }
        check_url_path(&event.path, false)
            .map_err(|message| ManifestError::new(format!("events[{i}].path"), message))?;
    }
    Ok(())
}

fn check_schedules(manifest: &Manifest) -> Check {
    for (i, schedule) in manifest.schedules.iter().enumerate() {
        super::ScheduleSpec::parse(&schedule.cron)
            .map(drop)
            .map_err(|message| ManifestError::new(format!("schedules[{i}].cron"), message))?;
        check_url_path(&schedule.path, false)
            .map_err(|message| ManifestError::new(format!("schedules[{i}].path"), message))?;
    }
    Ok(())
}

fn check_limits(limits: &Limits) -> Check {
    let values = [
        ("timeout_ms", Some(limits.timeout_ms)),
        ("memory_mb", Some(limits.memory_mb)),
        ("fuel", limits.fuel),
        ("max_request_bytes", Some(limits.max_request_bytes)),
        ("max_response_bytes", Some(limits.max_response_bytes)),
    ];
    for (name, value) in values {
        if value == Some(0) {
            return fail(format!("limits.{name}"), "must be positive");
        }
    }
    Ok(())
}
