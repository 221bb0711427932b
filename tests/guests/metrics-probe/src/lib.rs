//! Test guest: `GET /probe` records metric samples described by the query string and
//! answers with what the host said.
//!
//! Query parameters: `name` (the metric name), `kind` (`counter`, `gauge` or `histogram`;
//! default `counter`), `value` (default 1), `label.<name>=<value>` (a label, repeatable),
//! `series` (default 1: how many samples to record; with more than one, each sample gets
//! an extra label `series=<index>`, so each is a distinct series).
//!
//! Answer: `{"recorded": n, "refused": {"<error>": count}, "first_error": {"error",
//! "message"} | null}` where `<error>` is the WIT variant name (`invalid-name`,
//! `invalid-label`, `too-many-series`, `kind-mismatch`).

use std::collections::BTreeMap;

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::metrics::{self, MetricError};
use serde_json::{Value, json};

/// What the query asks for.
#[derive(Debug, PartialEq)]
struct Probe {
    name: String,
    kind: String,
    value: f64,
    labels: Vec<(String, String)>,
    series: usize,
}

fn handle(request: Request) -> Response {
    Router::new().get("/probe", probe).handle(request)
}

fn probe(request: Request) -> Response {
    match parse(&request.query_params()) {
        Ok(probe) => Response::json(200, &run(&probe)),
        Err(message) => Response::bad_request(message),
    }
}

fn parse(params: &[(String, String)]) -> Result<Probe, String> {
    let mut probe = Probe {
        name: String::new(),
        kind: "counter".into(),
        value: 1.0,
        labels: Vec::new(),
        series: 1,
    };
    for (key, value) in params {
        match key.as_str() {
            "name" => probe.name = value.clone(),
            "kind" => probe.kind = value.clone(),
            "value" => {
                probe.value = value
                    .parse()
                    .map_err(|_| format!("`value` is not a number: {value}"))?;
            }
            "series" => {
                probe.series = value
                    .parse()
                    .map_err(|_| format!("`series` is not a count: {value}"))?;
            }
            other => match other.strip_prefix("label.") {
                Some(label) => probe.labels.push((label.to_owned(), value.clone())),
                None => return Err(format!("unknown query parameter `{other}`")),
            },
        }
    }
    if !matches!(probe.kind.as_str(), "counter" | "gauge" | "histogram") {
        return Err(format!("unknown kind `{}`", probe.kind));
    }
    Ok(probe)
}

fn run(probe: &Probe) -> Value {
    let mut recorded = 0u64;
    let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_error = Value::Null;
    for index in 0..probe.series {
        let index = index.to_string();
        let mut labels: Vec<(&str, &str)> = probe
            .labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if probe.series > 1 {
            labels.push(("series", &index));
        }
        match record(probe, &labels) {
            Ok(()) => recorded += 1,
            Err(error) => {
                let code = code(&error);
                *refused.entry(code).or_default() += 1;
                if first_error.is_null() {
                    first_error = json!({ "error": code, "message": error.to_string() });
                }
            }
        }
    }
    json!({ "recorded": recorded, "refused": refused, "first_error": first_error })
}

fn record(probe: &Probe, labels: &[(&str, &str)]) -> Result<(), MetricError> {
    match probe.kind.as_str() {
        "gauge" => metrics::gauge_set(&probe.name, labels, probe.value),
        "histogram" => metrics::histogram_observe(&probe.name, labels, probe.value),
        // Counters take whole numbers; the probe rounds.
        _ => metrics::counter_add(&probe.name, labels, probe.value.max(0.0).round() as u64),
    }
}

fn code(error: &MetricError) -> &'static str {
    match error {
        MetricError::InvalidName(_) => "invalid-name",
        MetricError::InvalidLabel(_) => "invalid-label",
        MetricError::TooManySeries => "too-many-series",
        MetricError::KindMismatch => "kind-mismatch",
    }
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_the_query() {
        let probe = parse(&params(&[
            ("name", "x"),
            ("kind", "gauge"),
            ("value", "2.5"),
            ("label.page", "home"),
            ("series", "3"),
        ]))
        .unwrap();
        assert_eq!(
            probe,
            Probe {
                name: "x".into(),
                kind: "gauge".into(),
                value: 2.5,
                labels: vec![("page".into(), "home".into())],
                series: 3,
            }
        );
    }

    #[test]
    fn refuses_bad_queries() {
        assert!(parse(&params(&[("kind", "summary")])).is_err());
        assert!(parse(&params(&[("value", "x")])).is_err());
        assert!(parse(&params(&[("bogus", "1")])).is_err());
    }

    #[test]
    fn error_codes_are_the_wit_variant_names() {
        assert_eq!(code(&MetricError::InvalidName("x".into())), "invalid-name");
        assert_eq!(
            code(&MetricError::InvalidLabel("x".into())),
            "invalid-label"
        );
        assert_eq!(code(&MetricError::TooManySeries), "too-many-series");
        assert_eq!(code(&MetricError::KindMismatch), "kind-mismatch");
    }
}
