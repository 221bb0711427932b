//! `GET /metrics`: the OpenMetrics exposition of the runner's own series
//! ([`crate::platform_metrics`]) and of those extensions recorded through the `metrics`
//! capability, behind a bearer token when the operator set one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::RunnerState;

use palisade_protocol::exposition::negotiate;

/// The bearer token `GET /metrics` requires. `Debug` never shows it.
#[derive(Clone)]
pub struct MetricsToken(Arc<str>);

/// Why a metrics token was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsTokenError {
    /// The token is empty.
    #[error("the metrics token is empty")]
    Empty,
    /// The token holds a character a bearer token cannot carry.
    #[error(
        "the metrics token may hold only visible ASCII characters without spaces (character {position} is not)"
    )]
    BadCharacter {
        /// 1-based position of the first refused character.
        position: usize,
    },
}

impl MetricsToken {
    /// A token: visible ASCII without spaces, surrounding whitespace (a file's trailing
    /// newline) removed.
    pub fn new(token: &str) -> Result<Self, MetricsTokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(MetricsTokenError::Empty);
        }
        if let Some(position) = token.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(MetricsTokenError::BadCharacter {
                position: position + 1,
            });
        }
        Ok(MetricsToken(token.into()))
    }

    /// Whether `headers` carry `authorization: Bearer <this token>`, compared in time
    /// independent of the presented value (both sides hashed first).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
        else {
            return false;
        };
        let presented = Sha256::digest(presented.as_bytes());
        let expected = Sha256::digest(self.0.as_bytes());
        presented.as_slice().ct_eq(expected.as_slice()).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

pub(crate) async fn metrics(State(state): State<Arc<RunnerState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token
        && !token.admits(&headers)
    {
        tracing::info!("metrics scrape refused: missing or wrong bearer token");
        return (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            axum::Json(serde_json::json!({ "error": "unauthorized" })),
        )
            .into_response();
    }
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let extensions = state.runtime.metrics().clone();
    let platform = Arc::clone(&state.metrics);
    // Encoding walks every series; keep it off the async workers.
    let encode = move || {
        let mut text = String::new();
        platform.encode(&mut text);
        extensions.encode_families(&mut text);
        text.push_str("# EOF\n");
        text
    };
    match tokio::task::spawn_blocking(encode).await {
        Ok(text) => {
            let (content_type, body) = negotiate(accept.as_deref(), text);
            ([(CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "encoding the metrics exposition failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use palisade_runtime::capability::metrics::{ExtensionMetrics, MetricsConfig};
    use tower::ServiceExt;

    use palisade_protocol::exposition::OPENMETRICS_CONTENT_TYPE;

    use super::*;

    #[tokio::test]
    async fn the_exposition_is_openmetrics_text() {
        let metrics = ExtensionMetrics::new(MetricsConfig::default());
        metrics
            .install("acme", "com.example.counter")
            .counter_add("hits_total", vec![], 4)
            .unwrap();
        let (content_type, body) = negotiate(None, metrics.encode());
        let response = ([(CONTENT_TYPE, content_type)], body).into_response();
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

    /// The runner's routes with `metrics_token` as its setting.
    async fn app(dir: &tempfile::TempDir, metrics_token: Option<MetricsToken>) -> axum::Router {
        let state = crate::test_support::empty_runner(
            dir,
            crate::RunnerConfig {
                metrics_token,
                ..crate::RunnerConfig::default()
            },
        )
        .await;
        crate::app(Arc::new(state))
    }

    async fn scrape(app: &axum::Router, authorization: Option<&str>) -> Response {
        let mut request = http::Request::get("/metrics");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        app.clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_configured_token_guards_the_exposition() {
        let dir = tempfile::tempdir().unwrap();
        let token = MetricsToken::new("scrape-secret-123\n").unwrap();
        let app = app(&dir, Some(token)).await;
        for refused in [
            None,
            Some("Bearer scrape-secret-124"),
            Some("Bearer scrape-secret-12"),
            Some("Basic scrape-secret-123"),
            Some("scrape-secret-123"),
        ] {
            let response = scrape(&app, refused).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused:?}");
            assert!(response.headers().contains_key(WWW_AUTHENTICATE));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!String::from_utf8_lossy(&body).contains("scrape-secret"));
        }
        for admitted in ["Bearer scrape-secret-123", "bearer  scrape-secret-123"] {
            let response = scrape(&app, Some(admitted)).await;
            assert_eq!(response.status(), StatusCode::OK, "{admitted}");
            assert_eq!(response.headers()[CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        }
    }

    #[tokio::test]
    async fn without_a_token_the_exposition_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(&dir, None).await;
        assert_eq!(scrape(&app, None).await.status(), StatusCode::OK);
    }

    #[test]
    fn bad_tokens_are_refused_without_echo() {
        assert_eq!(
            MetricsToken::new(" \n").unwrap_err(),
            MetricsTokenError::Empty
        );
        let err = MetricsToken::new("two words").unwrap_err();
        assert_eq!(err, MetricsTokenError::BadCharacter { position: 4 });
        assert!(!err.to_string().contains("words"), "{err}");
        let token = MetricsToken::new("s3cr3t").unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
    }
}
