//! The operator's configuration: one TOML file (`--config FILE`), typed by
//! [`OperatorConfig`], holding every setting of the runtime, the capabilities, the runner,
//! the gateway (its request policy included) and the registry. Every key is optional and
//! has a documented default; flags of the same names override the file.
//!
//! [`load`] reports every problem of a file at once, each with the path of its key
//! (`runtime.egress.allow_cidrs[1]: ...`): unknown keys, values of the wrong type, and
//! values out of range. `palisade config default` prints the whole default file from the
//! same types ([`render_default`]).

mod render;
mod sections;

use std::fmt;
use std::path::Path;

use serde_path_to_error::Segment;

pub(crate) use render::render_default;
pub(crate) use sections::{OperatorConfig, OtlpProtocol, PolicySection, TelemetrySection};

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The key, as `section.key` (with `[i]` for array items); empty for the file itself.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem of a configuration file.
#[derive(Debug)]
pub(crate) struct ConfigErrors {
    /// The file.
    pub file: String,
    /// Its problems, in the order of the file's keys.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "configuration file {}: {count} {noun}", self.file)?;
        for problem in &self.problems {
            if problem.key.is_empty() {
                write!(f, "\n  {}", problem.message)?;
            } else {
                write!(f, "\n  {}: {}", problem.key, problem.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads `path`, or the defaults when none is given.
pub(crate) fn load(path: Option<&Path>) -> Result<OperatorConfig, ConfigErrors> {
    let Some(path) = path else {
        return Ok(OperatorConfig::default());
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("cannot be read: {e}"),
        }],
    })?;
    parse(&text).map_err(|problems| ConfigErrors { file, problems })
}

/// Parses a configuration file's text, reporting every problem.
pub(crate) fn parse(text: &str) -> Result<OperatorConfig, Vec<Problem>> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![Problem {
            key: String::new(),
            message: format!("is not valid TOML: {}", e.message().trim()),
        }]
    })?;
    // Deserialize; on an error, note it, take its key out and try again, so that every
    // bad key is reported, not just the first.
    let mut problems = Vec::new();
    let config = loop {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, OperatorConfig>(value) {
            Ok(config) => break Some(config),
            Err(error) => {
                let mut path: Vec<Segment> = error.path().iter().cloned().collect();
                let message = error.inner().message().trim().to_owned();
                // An unknown key is reported at its table; name the key itself.
                if let Some(unknown) = unknown_field(&message)
                    && !matches!(path.last(), Some(Segment::Map { key }) if *key == unknown)
                {
                    path.push(Segment::Map { key: unknown });
                }
                problems.push(Problem {
                    key: key_path(&path),
                    message: unknown_key_hint(&message).unwrap_or(message),
                });
                if !remove(&mut table, &path) {
                    break None;
                }
            }
        }
    };
    // The keys that remain are of the right types: check their ranges too.
    if let Some(config) = &config {
        problems.extend(config.problems());
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`..." as "unknown key" with the
/// closest known key, if one is close.
fn unknown_key_hint(message: &str) -> Option<String> {
    let unknown = unknown_field(message)?;
    let expected = message.split_once("expected")?.1;
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|known| (distance(&unknown, known), known))
        .filter(|(d, _)| *d <= 3)
        .min();
    Some(match closest {
        Some((_, known)) => format!("unknown key; did you mean `{known}`?"),
        None => "unknown key".to_owned(),
    })
}

/// The edit distance between `a` and `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

/// Checks a base URL: `http` or `https`, a host, no query or fragment.
fn check_base_url(base: &str) -> Result<(), String> {
    let uri: http::Uri = base
        .parse()
        .map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{base}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{base}` names no host"));
    }
    if uri.query().is_some() || base.contains('#') {
        return Err(format!("`{base}` must have no query or fragment"));
    }
    Ok(())
}

/// The key named by serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// `runtime.egress.allow_cidrs[1]`.
fn key_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => {
                out.push('.');
                out.push_str(variant);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Takes the key at `path` out of `table` (the whole key when the path ends inside one of
/// its values); `false` when there is nothing to take out.
fn remove(table: &mut toml::Table, path: &[Segment]) -> bool {
    let keys: Vec<&str> = path
        .iter()
        .map_while(|segment| match segment {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut current = table;
    for key in parents {
        if !matches!(current.get(*key), Some(toml::Value::Table(_))) {
            // The parent itself is not a table: take it out instead.
            return current.remove(*key).is_some();
        }
        match current.get_mut(*key) {
            Some(toml::Value::Table(inner)) => current = inner,
            _ => return false,
        }
    }
    current.remove(*last).is_some()
}

impl OperatorConfig {
    /// TLS settings that go together but are set alone, and files that do not load.
    fn tls_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            })
        };
        let runner = &self.runner;
        match (&runner.tls_cert, &runner.tls_key) {
            (Some(_), None) => problem("runner.tls_key", "is needed with runner.tls_cert".into()),
            (None, Some(_)) => problem("runner.tls_cert", "is needed with runner.tls_key".into()),
            (None, None) if runner.tls_client_ca.is_some() => problem(
                "runner.tls_client_ca",
                "needs runner.tls_cert and runner.tls_key (client certificates are checked only over TLS)".into(),
            ),
            _ => {}
        }
        if let Some(files) = runner.tls_files()
            && let Err(e) = palisade_protocol::tls::ServerTls::load(&files)
        {
            problem("runner.tls_cert", e.to_string());
        }
        let gateway = &self.gateway;
        match (&gateway.runner_tls_cert, &gateway.runner_tls_key) {
            (Some(_), None) => problem(
                "gateway.runner_tls_key",
                "is needed with gateway.runner_tls_cert".into(),
            ),
            (None, Some(_)) => problem(
                "gateway.runner_tls_cert",
                "is needed with gateway.runner_tls_key".into(),
            ),
            _ => {}
        }
        if gateway.runner_tls_ca.is_none() && gateway.runner_tls_cert.is_some() {
            problem(
                "gateway.runner_tls_ca",
                "is needed with gateway.runner_tls_cert (the runners' CA)".into(),
            );
        }
        if let Some(files) = gateway.runner_tls_files()
            && files.cert.is_some() == files.key.is_some()
            && let Err(e) = palisade_protocol::tls::ClientTls::load(&files)
        {
            problem("gateway.runner_tls_ca", e.to_string());
        }
        problems
    }

    /// The values that are of the right type but out of range.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let policy = &self.policy;
        for (name, limit) in [
            ("rate_limit", &policy.rate_limit),
            ("tenant_rate_limit", &policy.tenant_rate_limit),
            ("caller_rate_limit", &policy.caller_rate_limit),
        ] {
            for (key, message) in limit.problems() {
                problems.push(Problem {
                    key: format!("policy.{name}.{key}"),
                    message,
                });
            }
        }
        problems.extend(self.tls_problems());
        let runtime = &self.runtime;
        if runtime.max_instances == 0 {
            problems.push(Problem {
                key: "runtime.max_instances".into(),
                message: "must be at least 1".into(),
            });
        }
        if runtime.epoch_tick_ms == 0 {
            problems.push(Problem {
                key: "runtime.epoch_tick_ms".into(),
                message: "must be at least 1".into(),
            });
        }
        if !runtime.operator_log_lines_per_second.is_finite()
            || runtime.operator_log_lines_per_second < 0.0
        {
            problems.push(Problem {
                key: "runtime.operator_log_lines_per_second".into(),
                message: "must be a non-negative number".into(),
            });
        }
        let cache = &runtime.cache;
        if cache.max_bytes_per_install > cache.max_bytes {
            problems.push(Problem {
                key: "runtime.cache.max_bytes_per_install".into(),
                message: format!(
                    "is larger than runtime.cache.max_bytes ({})",
                    cache.max_bytes
                ),
            });
        }
        if let Some(base) = &self.ui.public_base
            && let Err(message) = check_base_url(base)
        {
            problems.push(Problem {
                key: "ui.public_base".into(),
                message,
            });
        }
        for (i, origin) in self.ui.frame_ancestors.iter().enumerate() {
            if let Err(e) = palisade_bundle::manifest::AllowedOrigin::parse(origin) {
                problems.push(Problem {
                    key: format!("ui.frame_ancestors[{i}]"),
                    message: e.to_string(),
                });
            }
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && let Err(message) = check_base_url(endpoint)
        {
            problems.push(Problem {
                key: "telemetry.otlp_endpoint".into(),
                message,
            });
        }
        if self
            .telemetry
            .service_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            problems.push(Problem {
                key: "telemetry.service_name".into(),
                message: "must not be empty".into(),
            });
        }
        let events = &self.events;
        for (key, value) in [
            ("events.poll_interval_ms", events.poll_interval_ms),
            ("events.batch", u64::from(events.batch)),
            ("events.max_attempts", u64::from(events.max_attempts)),
            ("events.backoff_base_ms", events.backoff_base_ms),
            ("events.retention_hours", events.retention_hours),
        ] {
            if value == 0 {
                problems.push(Problem {
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        if events.backoff_max_ms < events.backoff_base_ms {
            problems.push(Problem {
                key: "events.backoff_max_ms".into(),
                message: format!(
                    "is shorter than events.backoff_base_ms ({})",
                    events.backoff_base_ms
                ),
            });
        }
        if events.lease_ms <= runtime.max_timeout_ms {
            problems.push(Problem {
                key: "events.lease_ms".into(),
                message: format!(
                    "must be longer than runtime.max_timeout_ms ({}), so that a delivery \
                     is not taken by another dispatcher while it runs",
                    runtime.max_timeout_ms
                ),
            });
        }
        if let Some(location) = &self.registry.object_store
            && !location.starts_with("s3://")
        {
            problems.push(Problem {
                key: "registry.object_store".into(),
                message: format!(
                    "`{location}` is not an object store this build supports: use `s3://bucket` \
                     or `s3://bucket/prefix`"
                ),
            });
        }
        if let Some(endpoint) = &self.registry.s3_endpoint
            && let Err(message) = check_base_url(endpoint)
        {
            problems.push(Problem {
                key: "registry.s3_endpoint".into(),
                message,
            });
        }
        let quotas = &self.quotas;
        if quotas.max_allowance == 0 {
            problems.push(Problem {
                key: "quotas.max_allowance".into(),
                message: "must be at least 1".into(),
            });
        }
        if quotas.limits_fuel() && !runtime.fuel {
            problems.push(Problem {
                key: "quotas".into(),
                message: "a fuel quota is set but runtime.fuel is off, so no fuel is counted; \
                          set runtime.fuel = true"
                    .into(),
            });
        }
        for id in quotas.tenants.keys() {
            if let Err(err) = palisade_registry::install::validate_tenant_id(id) {
                problems.push(Problem {
                    key: format!("quotas.tenants.{id}"),
                    message: err.to_string(),
                });
            }
        }
        if self.storage.install_write_burst == 0 {
            problems.push(Problem {
                key: "storage.install_write_burst".into(),
                message: "must be at least 1".into(),
            });
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn quotas_reach_the_gateway_and_their_problems_are_named() {
        let config = parse(
            r#"
[runtime]
fuel = true
[quotas]
max_allowance = 10
[quotas.tenant]
calls = 1000
[quotas.install]
fuel = 5000
[quotas.tenants.acme.install]
egress_bytes = 99
"#,
        )
        .unwrap();
        let quotas = config.quotas.to_quota_config();
        assert_eq!(quotas.default.tenant.calls, Some(1000));
        assert_eq!(quotas.default.install.fuel, Some(5000));
        assert_eq!(quotas.max_allowance, 10);
        // A tenant of its own replaces the default whole.
        let acme = quotas.for_tenant("acme");
        assert_eq!(acme.tenant.calls, None);
        assert_eq!(acme.install.egress_bytes, Some(99));
        assert_eq!(acme.install.fuel, None);

        let problems = parse(
            r#"
[quotas]
max_allowance = 0
[quotas.tenant]
fuel = 1
[quotas.tenants."not a tenant"]
"#,
        )
        .unwrap_err();
        let mut found = keys(&problems);
        found.sort_unstable();
        assert_eq!(
            found,
            [
                "quotas",
                "quotas.max_allowance",
                "quotas.tenants.not a tenant"
            ]
        );
        assert!(problems.iter().any(|p| p.message.contains("runtime.fuel")));
    }

    #[test]
    fn tls_settings_reach_runner_and_gateway_and_their_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = palisade_protocol::tls::dev::generate(&["localhost".to_owned()]).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (ca, cert, key) = (
            write("ca.pem", &certs.ca.cert),
            write("runner.pem", &certs.runner.cert),
            write("runner.key", &certs.runner.key),
        );
        let (gateway_cert, gateway_key) = (
            write("gateway.pem", &certs.gateway.cert),
            write("gateway.key", &certs.gateway.key),
        );
        let config = parse(&format!(
            "[runner]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_client_ca = \"{ca}\"\n\
             [gateway]\nrunner_tls_ca = \"{ca}\"\nrunner_tls_cert = \"{gateway_cert}\"\n\
             runner_tls_key = \"{gateway_key}\"\n"
        ))
        .unwrap();
        let server = config.runner.tls_files().unwrap();
        assert_eq!(server.client_ca.unwrap().display().to_string(), ca);
        let mut gateway = sections::gateway_defaults();
        config.gateway.apply(&mut gateway);
        assert_eq!(
            gateway
                .runner_tls
                .unwrap()
                .cert
                .unwrap()
                .display()
                .to_string(),
            gateway_cert
        );

        let problems = parse(&format!(
            "[runner]\ntls_cert = \"{cert}\"\n\
             [gateway]\nrunner_tls_cert = \"{gateway_cert}\"\nrunner_tls_key = \"{gateway_key}\"\n"
        ))
        .unwrap_err();
        let mut found = keys(&problems);
        found.sort_unstable();
        assert_eq!(found, ["gateway.runner_tls_ca", "runner.tls_key"]);

        // Files that do not load are named.
        let problems = parse(&format!(
            "[runner]\ntls_cert = \"{cert}\"\ntls_key = \"{gateway_key}\"\n\
             [gateway]\nrunner_tls_ca = \"{}\"\n",
            dir.path().join("missing.pem").display()
        ))
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            ["runner.tls_cert", "gateway.runner_tls_ca"]
        );
        assert!(
            problems[0].message.contains("gateway.key"),
            "{}",
            problems[0].message
        );
        assert!(
            problems[1].message.contains("missing.pem"),
            "{}",
            problems[1].message
        );
        let problems = parse("[runner]\ntls_client_ca = \"ca.pem\"\n").unwrap_err();
        assert_eq!(keys(&problems), ["runner.tls_client_ca"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[runtime]
max_instancez = 10
max_memory_mb = "a lot"
fuel = true

[runtime.egress]
allow_cidrs = ["10.0.0.0/8", "not a range"]

[gateway]
install_cache_ttl_ms = -1

[policy.rate_limit]
per_second = -2.0
burst = 0

[nonsense]
x = 1
"#;
        let problems = parse(text).unwrap_err();
        let mut found = keys(&problems);
        found.sort_unstable();
        assert_eq!(
            found,
            [
                "gateway.install_cache_ttl_ms",
                "nonsense",
                "policy.rate_limit.burst",
                "policy.rate_limit.per_second",
                "runtime.egress.allow_cidrs[1]",
                "runtime.max_instancez",
                "runtime.max_memory_mb",
            ],
            "{problems:#?}"
        );
        let message = |key: &str| &problems.iter().find(|p| p.key == key).unwrap().message;
        assert_eq!(message("nonsense"), "unknown key");
        assert_eq!(
            message("runtime.max_instancez"),
            "unknown key; did you mean `max_instances`?"
        );
    }

    #[test]
    fn values_out_of_range_are_reported_once_the_types_are_right() {
        let text = "[policy.rate_limit]\nper_second = -2.0\nburst = 0\n\
                    [runtime.cache]\nmax_bytes = 10\nmax_bytes_per_install = 20\n\
                    [ui]\npublic_base = \"ftp://ui.example\"\n\
                    frame_ancestors = [\"https://app.example\", \"https://x; script-src *\"]\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "policy.rate_limit.per_second",
                "policy.rate_limit.burst",
                "runtime.cache.max_bytes_per_install",
                "ui.public_base",
                "ui.frame_ancestors[1]",
            ]
        );
    }

    #[test]
    fn telemetry_settings_are_checked() {
        let text = "[telemetry]\notlp_endpoint = \"collector:4318\"\nservice_name = \" \"\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(
            keys(&problems),
            ["telemetry.otlp_endpoint", "telemetry.service_name"]
        );
        let problems = parse("[telemetry]\notlp_protocol = \"grpc\"\n").unwrap_err();
        assert_eq!(keys(&problems), ["telemetry.otlp_protocol"]);
        let config =
            parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\notlp_protocol = \"http/json\"\n")
                .unwrap();
        assert_eq!(config.telemetry.otlp_protocol, OtlpProtocol::HttpJson);
    }

    #[test]
    fn keys_are_optional_and_take_their_defaults() {
        let config = parse("[runtime]\nmax_instances = 20\n").unwrap();
        assert_eq!(config.runtime.max_instances, 20);
        assert_eq!(
            config.runtime.max_memory_mb,
            OperatorConfig::default().runtime.max_memory_mb
        );
        parse("").unwrap();
    }

    #[test]
    fn a_file_that_is_not_toml_says_so() {
        let problems = parse("[runtime\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("not valid TOML"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(Some(Path::new("/nonexistent/palisade.toml"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/palisade.toml"), "{text}");
        assert!(text.contains("cannot be read"), "{text}");
    }

    #[test]
    fn the_default_file_parses_to_the_defaults() {
        let text = render_default();
        let config = parse(&text).unwrap();
        let default = OperatorConfig::default();
        assert_eq!(
            toml::to_string(&config).unwrap(),
            toml::to_string(&default).unwrap()
        );
    }
}
