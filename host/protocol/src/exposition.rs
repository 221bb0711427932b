//! Metrics expositions for scrapers: the OpenMetrics text that `prometheus-client` writes,
//! or the same series in the Prometheus text format (0.0.4) for a scraper that asks for
//! `text/plain` (older Prometheus servers, `promtool check metrics`).

/// The content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of a Prometheus text exposition.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `accept` header asks for the Prometheus text format rather than
/// OpenMetrics: it names `text/plain` and not `application/openmetrics-text`.
pub fn wants_prometheus_text(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
    })
}

/// The content type and body to answer a scraper whose `accept` header is `accept`, for
/// an exposition in OpenMetrics text.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if wants_prometheus_text(accept) {
        (
            PROMETHEUS_TEXT_CONTENT_TYPE,
            to_prometheus_text(&openmetrics),
        )
    } else {
        (OPENMETRICS_CONTENT_TYPE, openmetrics)
    }
}

/// `openmetrics` in the Prometheus text format: a counter family `x` is announced as
/// `x_total` (the name of its samples), `# UNIT` lines and `# EOF` go, and help texts lose
/// the quote escapes the older format does not have. Samples are kept as they are.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (exposed, kind) = match kind {
                "counter" => (format!("{name}_total"), kind),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(of, _)| *of == name) {
                out.push_str(&format!(
                    "# HELP {exposed} {}\n",
                    text.replace("\\\"", "\"")
                ));
            }
            out.push_str(&format!("# TYPE {exposed} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_announced_by_their_sample_name() {
        let openmetrics = "# HELP calls Calls, \\\"all\\\" of them.\n# TYPE calls counter\n\
                           calls_total{a=\"b\"} 3\n# HELP wait Waiting.\n# TYPE wait histogram\n\
                           # UNIT wait seconds\nwait_bucket{le=\"+Inf\"} 1\nwait_sum 0.5\n\
                           wait_count 1\n# HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP calls_total Calls, \"all\" of them.\n# TYPE calls_total counter\n\
             calls_total{a=\"b\"} 3\n# HELP wait Waiting.\n# TYPE wait histogram\n\
             wait_bucket{le=\"+Inf\"} 1\nwait_sum 0.5\nwait_count 1\n# HELP up Up.\n\
             # TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn only_a_plain_text_accept_gets_the_prometheus_format() {
        assert!(!wants_prometheus_text(None));
        assert!(!wants_prometheus_text(Some("*/*")));
        assert!(wants_prometheus_text(Some("text/plain;version=0.0.4")));
        let both = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert!(!wants_prometheus_text(Some(both)));
    }
}
