//! Sample Palisade extension: `POST /hit/:page` records three metrics and answers with
//! what it recorded:
//!
//! * counter `page_hits_total{page}` — one more hit of the page;
//! * gauge `last_body_bytes{page}` — the size of the latest request body for the page;
//! * histogram `hit_body_bytes` — the distribution of request body sizes.
//!
//! The runner exports them as `ext_com_example_counter__page_hits_total`,
//! `ext_com_example_counter__last_body_bytes` and `ext_com_example_counter__hit_body_bytes`
//! with the `tenant` and `extension` labels added. A metric the host
//! refuses (for example once the install's series bound is reached) is logged and listed
//! under `errors`; the hit is still answered.

use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::log;
use palisade_sdk::metrics::{self, MetricError};
use serde::Serialize;

/// The body of a `POST /hit/:page` answer.
#[derive(Debug, Serialize, PartialEq)]
struct Hit {
    page: String,
    body_bytes: usize,
    /// Metrics the host refused, with the reason.
    errors: Vec<MetricFailure>,
}

/// One metric the host refused.
#[derive(Debug, Serialize, PartialEq)]
struct MetricFailure {
    metric: &'static str,
    error: String,
}

fn handle(request: Request) -> Response {
    router().handle(request)
}

fn router() -> Router {
    Router::new().post("/hit/:page", hit)
}

fn hit(request: Request) -> Response {
    let Some(page) = request.param("page") else {
        return Response::bad_request("the path parameter `page` is missing");
    };
    let size = request.body().len();
    // Body sizes are far below 2^52, so the conversion is exact.
    let size_f64 = size as f64;
    let labels = [("page", page)];
    let results = [
        (
            "page_hits_total",
            metrics::counter_add("page_hits_total", &labels, 1),
        ),
        (
            "last_body_bytes",
            metrics::gauge_set("last_body_bytes", &labels, size_f64),
        ),
        (
            "hit_body_bytes",
            metrics::histogram_observe("hit_body_bytes", &[], size_f64),
        ),
    ];
    let answer = summarize(page, size, results);
    for failure in &answer.errors {
        log::write(
            log::Level::Warn,
            "metric not recorded",
            &[("metric", failure.metric), ("error", &failure.error)],
        );
    }
    Response::json(200, &answer)
}

fn summarize(
    page: &str,
    body_bytes: usize,
    results: [(&'static str, Result<(), MetricError>); 3],
) -> Hit {
    Hit {
        page: page.to_owned(),
        body_bytes,
        errors: results
            .into_iter()
            .filter_map(|(metric, result)| {
                result.err().map(|error| MetricFailure {
                    metric,
                    error: error.to_string(),
                })
            })
            .collect(),
    }
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::http::Method;

    #[test]
    fn a_fully_recorded_hit_has_no_errors() {
        let hit = summarize("home", 12, [("a", Ok(())), ("b", Ok(())), ("c", Ok(()))]);
        assert_eq!(
            hit,
            Hit {
                page: "home".into(),
                body_bytes: 12,
                errors: vec![],
            }
        );
    }

    #[test]
    fn refused_metrics_are_listed() {
        let hit = summarize(
            "home",
            0,
            [
                ("page_hits_total", Err(MetricError::TooManySeries)),
                ("b", Ok(())),
                ("c", Err(MetricError::KindMismatch)),
            ],
        );
        assert_eq!(hit.errors.len(), 2);
        assert_eq!(hit.errors[0].metric, "page_hits_total");
        assert!(hit.errors[0].error.contains("too many metric series"));
        assert_eq!(hit.errors[1].metric, "c");
    }

    #[test]
    fn only_post_hit_is_routed() {
        let router = router();
        assert_eq!(
            router
                .handle(Request::new(Method::Get, "/hit/home"))
                .status(),
            405
        );
        assert_eq!(
            router.handle(Request::new(Method::Post, "/other")).status(),
            404
        );
    }
}
