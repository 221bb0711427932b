//! `GET /metrics`: the OpenMetrics exposition of the series that extensions recorded
//! through the `metrics` capability.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::RunnerState;

/// The content type of an OpenMetrics text exposition.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) async fn metrics(State(state): State<Arc<RunnerState>>) -> Response {
    let metrics = state.runtime.metrics().clone();
    // Encoding walks every series; keep it off the async workers.
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(text) => render(text),
        Err(error) => {
            tracing::error!(%error, "encoding the metrics exposition failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn render(text: String) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use palisade_runtime::capability::metrics::{ExtensionMetrics, MetricsConfig};

    use super::*;

    #[tokio::test]
    async fn the_exposition_is_openmetrics_text() {
        let metrics = ExtensionMetrics::new(MetricsConfig::default());
        metrics
            .install("acme", "com.example.counter")
            .counter_add("hits_total", vec![], 4)
            .unwrap();
        let response = render(metrics.encode());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"ext_com_example_counter__hits_total{tenant="acme",extension="com.example.counter"} 4"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
