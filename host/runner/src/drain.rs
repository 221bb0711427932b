//! Graceful drain: once begun, new execute calls are turned away with 503 `unavailable`
//! (and `retry-after`), `/healthz` answers 503, and the calls already running are counted
//! down so the server can stop when the last one has answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use palisade_protocol::body::Guarded;
use tokio::sync::Notify;

use crate::error::RunnerError;

/// The runner's drain state and its count of execute calls in flight.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Drain {
    /// A drain that has not begun.
    pub fn new() -> Arc<Self> {
        Arc::new(Drain::default())
    }

    /// Stops accepting new calls. Idempotent.
    pub fn begin(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!(
                in_flight = self.in_flight(),
                "draining: refusing new calls, finishing the running ones"
            );
        }
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Execute calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no execute call is running (at once if none is). Meant to be awaited
    /// after [`Drain::begin`], when no new call can start.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a call in, unless the drain has begun.
    fn admit(self: &Arc<Self>) -> Option<InFlight> {
        // Count first, then check: a drain that begins in between still waits for this call.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(self));
        (!self.is_draining()).then_some(guard)
    }
}

/// One call in flight; counted out when dropped.
struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Middleware of `/v1/execute`: refuses calls while draining, counts the others.
pub(crate) async fn admit(
    State(drain): State<Arc<Drain>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(guard) = drain.admit() else {
        let request_id = request
            .headers()
            .get(palisade_protocol::hop::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return RunnerError::Draining.into_reply(request_id);
    };
    // The call is in flight until its body has been sent.
    next.run(request)
        .await
        .map(|body| axum::body::Body::new(Guarded::new(body, guard)))
}

/// `GET /healthz`: 200 `ok`, or 503 `draining`.
pub(crate) async fn healthz(State(drain): State<Arc<Drain>>) -> Response {
    if drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ok".into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_calls_admitted_before_the_drain() {
        let drain = Drain::new();
        let first = drain.admit().unwrap();
        let second = drain.admit().unwrap();
        drain.begin();
        assert!(
            drain.admit().is_none(),
            "no call is admitted while draining"
        );
        assert_eq!(drain.in_flight(), 2);

        let waiter = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { drain.idle().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_draining_runner_answers_503_to_calls_and_health_checks() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let dir = tempfile::tempdir().unwrap();
        let state = crate::test_support::empty_runner(&dir, crate::RunnerConfig::default()).await;
        let drain = state.drain();
        let app = crate::app(Arc::new(state));
        let get = |uri: &str| {
            http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let healthz = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(healthz.status(), StatusCode::OK);

        drain.begin();
        let healthz = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(healthz.status(), StatusCode::SERVICE_UNAVAILABLE);
        let execute = http::Request::post("/v1/execute/anything")
            .header(palisade_protocol::hop::REQUEST_ID, "r-7")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let refused = app.oneshot(execute).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "unavailable");
        assert_eq!(body["request_id"], "r-7");
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn idle_returns_at_once_without_calls() {
        let drain = Drain::new();
        drain.begin();
        drain.begin();
        tokio::time::timeout(Duration::from_secs(1), drain.idle())
            .await
            .unwrap();
    }
}
