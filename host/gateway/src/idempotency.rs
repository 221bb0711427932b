//! Idempotent replay: a non-GET call carrying `x-idempotency-key` runs once per tenant,
//! extension and key within the window; a repeat gets the stored answer (marked with
//! `x-idempotent-replay: true`), and a concurrent duplicate waits for the first call's
//! answer. Only completed guest responses are kept — a platform error (timeout, runner
//! down, over quota…) is not, so a retry runs again. The store is bounded by entry count
//! and total bytes, oldest entries going first.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use palisade_protocol::ErrorCode;
use tokio::sync::watch;

use crate::error::ApiError;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
/// The response header marking a replayed answer.
pub const REPLAY_HEADER: &str = "x-idempotent-replay";
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Default replay window: 24 hours.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Default bound on stored answers.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default bound on the stored answers' bodies and headers: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How idempotency keys are honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long an answer is replayed.
    pub window: Duration,
    /// Most answers kept.
    pub max_entries: usize,
    /// Most bytes (bodies and headers) kept; a larger single answer is not stored.
    pub max_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            window: DEFAULT_WINDOW,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why an `x-idempotency-key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// More than one header.
    #[error("{IDEMPOTENCY_KEY}: more than one header")]
    Repeated,
    /// Empty, longer than [`MAX_KEY_LEN`], or not printable ASCII.
    #[error("{IDEMPOTENCY_KEY}: must be 1 to {MAX_KEY_LEN} printable ASCII characters")]
    Invalid,
}

/// The key of a request, if it carries one and is not a GET or HEAD.
pub fn request_key(method: &Method, headers: &HeaderMap) -> Result<Option<String>, KeyError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(None);
    }
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(KeyError::Invalid);
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// A stored guest answer.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The endpoint template the call matched, for the execution log.
    template: Option<String>,
}

impl StoredResponse {
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        self.body.len() + headers
    }

    fn replay(&self) -> Response {
        let mut response = (self.status, Body::from(self.body.clone())).into_response();
        response.headers_mut().extend(self.headers.clone());
        response
            .headers_mut()
            .insert(REPLAY_HEADER, HeaderValue::from_static("true"));
        response
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    tenant: String,
    extension: String,
    key: String,
}

type Outcome = Option<Arc<StoredResponse>>;

enum Entry {
    Running {
        fingerprint: String,
        done: watch::Receiver<Outcome>,
    },
    Done {
        fingerprint: String,
        response: Arc<StoredResponse>,
        expires: Instant,
        seq: u64,
    },
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Scope, Entry>,
    /// Stored answers, oldest first (which is also expiry order).
    order: VecDeque<(Scope, u64)>,
    bytes: usize,
    next_seq: u64,
}

impl Inner {
    fn remove_front(&mut self) {
        if let Some((scope, seq)) = self.order.pop_front()
            && let Some(Entry::Done {
                seq: stored,
                response,
                ..
            }) = self.entries.get(&scope)
            && *stored == seq
        {
            self.bytes -= response.size();
            self.entries.remove(&scope);
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some((scope, _)) = self.order.front() {
            match self.entries.get(scope) {
                Some(Entry::Done { expires, .. }) if *expires > now => break,
                _ => self.remove_front(),
            }
        }
    }
}

/// The answers kept for replay.
pub struct IdempotencyStore {
    config: IdempotencyConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Claim<'a> {
    Replay(Arc<StoredResponse>),
    Conflict,
    Lead(Lease<'a>),
}

/// The right to run a call; dropping it unfinished lets a waiting duplicate run instead.
struct Lease<'a> {
    store: &'a IdempotencyStore,
    scope: Scope,
    fingerprint: String,
    done: watch::Sender<Outcome>,
    finished: bool,
}

impl Lease<'_> {
    fn complete(mut self, response: StoredResponse) {
        let response = Arc::new(response);
        let size = response.size();
        let mut inner = self.store.lock();
        if size <= self.store.config.max_bytes && self.store.config.max_entries > 0 {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.bytes += size;
            inner.order.push_back((self.scope.clone(), seq));
            inner.entries.insert(
                self.scope.clone(),
                Entry::Done {
                    fingerprint: std::mem::take(&mut self.fingerprint),
                    response: response.clone(),
                    expires: Instant::now() + self.store.config.window,
                    seq,
                },
            );
            while inner.order.len() > self.store.config.max_entries
                || inner.bytes > self.store.config.max_bytes
            {
                inner.remove_front();
            }
        } else {
            inner.entries.remove(&self.scope);
        }
        drop(inner);
        self.finished = true;
        self.done.send_replace(Some(response));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.store.lock();
            if matches!(inner.entries.get(&self.scope), Some(Entry::Running { .. })) {
                inner.entries.remove(&self.scope);
            }
        }
    }
}

impl IdempotencyStore {
    /// An empty store.
    pub fn new(config: &IdempotencyConfig) -> Self {
        IdempotencyStore {
            config: config.clone(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn claim(&self, scope: Scope, fingerprint: String) -> Claim<'_> {
        loop {
            let mut done = {
                let mut inner = self.lock();
                inner.purge_expired(Instant::now());
                match inner.entries.get(&scope) {
                    Some(Entry::Done {
                        fingerprint: stored,
                        response,
                        ..
                    }) => {
                        return if *stored == fingerprint {
                            Claim::Replay(response.clone())
                        } else {
                            Claim::Conflict
                        };
                    }
                    Some(Entry::Running {
                        fingerprint: running,
                        done,
                    }) => {
                        if *running != fingerprint {
                            return Claim::Conflict;
                        }
                        done.clone()
                    }
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        inner.entries.insert(
                            scope.clone(),
                            Entry::Running {
                                fingerprint: fingerprint.clone(),
                                done: receiver,
                            },
                        );
                        return Claim::Lead(Lease {
                            store: self,
                            scope,
                            fingerprint,
                            done: sender,
                            finished: false,
                        });
                    }
                }
            };
            // Wait for the first call; if it ends without an answer, try to run it here.
            if let Ok(outcome) = done.wait_for(Option::is_some).await
                && let Some(response) = outcome.clone()
            {
                return Claim::Replay(response);
            }
        }
    }

    /// Runs `call` at most once for the request's idempotency key (when it has one) and
    /// returns its endpoint template and answer, or the stored ones.
    pub(crate) async fn run<F>(
        &self,
        tenant: &str,
        extension: &str,
        parts: &Parts,
        request_id: &str,
        call: F,
    ) -> (Option<String>, Result<Response, ApiError>)
    where
        F: Future<Output = (Option<String>, Result<Response, ApiError>)>,
    {
        let key = match request_key(&parts.method, &parts.headers) {
            Ok(Some(key)) => key,
            Ok(None) => return call.await,
            Err(err) => {
                tracing::info!(error = %err, "idempotency key refused");
                return (None, Err(ApiError::new(ErrorCode::BadRequest, request_id)));
            }
        };
        let scope = Scope {
            tenant: tenant.to_owned(),
            extension: extension.to_owned(),
            key,
        };
        let fingerprint = format!("{} {}", parts.method, parts.uri);
        let lease = match self.claim(scope, fingerprint).await {
            Claim::Replay(stored) => {
                tracing::info!("idempotent replay");
                return (stored.template.clone(), Ok(stored.replay()));
            }
            Claim::Conflict => {
                tracing::info!("idempotency key reused for another method or path");
                let error = ApiError::with_status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadRequest,
                    request_id,
                );
                return (None, Err(error));
            }
            Claim::Lead(lease) => lease,
        };
        let (template, result) = call.await;
        let response = match result {
            Ok(response) => response,
            // Platform errors are not stored; the lease is dropped and a duplicate may run.
            Err(error) => return (template, Err(error)),
        };
        let (mut head, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            tracing::error!("reading a guest answer for the idempotency store failed");
            return (
                template,
                Err(ApiError::new(ErrorCode::Internal, request_id)),
            );
        };
        lease.complete(StoredResponse {
            status: head.status,
            headers: head.headers.clone(),
            body: body.clone(),
            template: template.clone(),
        });
        head.headers.remove(REPLAY_HEADER);
        (template, Ok(Response::from_parts(head, Body::from(body))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, key: Option<&str>) -> Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/api/ext/x/items");
        if let Some(key) = key {
            builder = builder.header(IDEMPOTENCY_KEY, key);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn answer(body: &'static str) -> (Option<String>, Result<Response, ApiError>) {
        (
            Some("/items".into()),
            Ok((StatusCode::CREATED, body).into_response()),
        )
    }

    async fn body(response: Response) -> Bytes {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
    }

    #[test]
    fn keys_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_key(&Method::POST, &headers), Ok(None));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
        assert_eq!(request_key(&Method::POST, &headers), Ok(Some("k-1".into())));
        assert_eq!(request_key(&Method::GET, &headers), Ok(None));
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_str(&"a".repeat(256)).unwrap(),
        );
        assert_eq!(request_key(&Method::POST, &headers), Err(KeyError::Invalid));
        headers.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_key(&Method::PUT, &headers), Err(KeyError::Invalid));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert_eq!(request_key(&Method::PUT, &headers), Err(KeyError::Invalid));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert_eq!(request_key(&Method::PUT, &headers), Err(KeyError::Repeated));
    }

    #[tokio::test]
    async fn second_call_is_replayed_and_scoped() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let p = parts("POST", Some("k"));
        let (_, first) = store.run("t", "e", &p, "r1", async { answer("one") }).await;
        let first = first.unwrap();
        assert!(first.headers().get(REPLAY_HEADER).is_none());
        assert_eq!(body(first).await, "one");
        let (template, second) = store.run("t", "e", &p, "r2", async { answer("two") }).await;
        let second = second.unwrap();
        assert_eq!(template.as_deref(), Some("/items"));
        assert_eq!(second.status(), StatusCode::CREATED);
        assert_eq!(second.headers()[REPLAY_HEADER], "true");
        assert_eq!(body(second).await, "one");
        // Another tenant or extension runs its own call.
        let (_, other) = store
            .run("t2", "e", &p, "r3", async { answer("three") })
            .await;
        assert_eq!(body(other.unwrap()).await, "three");
        let (_, other) = store
            .run("t", "e2", &p, "r4", async { answer("four") })
            .await;
        assert_eq!(body(other.unwrap()).await, "four");
        // The same key on another path is refused.
        let moved = http::Request::builder()
            .method("POST")
            .uri("/api/ext/x/other")
            .header(IDEMPOTENCY_KEY, "k")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let (_, conflict) = store
            .run("t", "e", &moved, "r5", async { answer("x") })
            .await;
        assert_eq!(
            conflict.unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[tokio::test]
    async fn platform_errors_are_not_stored() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let p = parts("POST", Some("k"));
        let (_, first) = store
            .run("t", "e", &p, "r1", async {
                (None, Err(ApiError::new(ErrorCode::Unavailable, "r1")))
            })
            .await;
        assert!(first.is_err());
        assert!(store.is_empty());
        let (_, second) = store.run("t", "e", &p, "r2", async { answer("ran") }).await;
        assert_eq!(body(second.unwrap()).await, "ran");
    }

    #[tokio::test]
    async fn bad_key_is_a_bad_request() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let long = "k".repeat(300);
        let p = parts("POST", Some(&long));
        let (_, result) = store.run("t", "e", &p, "r", async { answer("x") }).await;
        assert_eq!(result.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[tokio::test]
    async fn concurrent_duplicates_run_once() {
        let store = Arc::new(IdempotencyStore::new(&IdempotencyConfig::default()));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = parts("POST", Some("k"));
        let call = |runs: Arc<std::sync::atomic::AtomicUsize>| async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer("once")
        };
        let (a, b) = tokio::join!(
            store.run("t", "e", &p, "r1", call(runs.clone())),
            store.run("t", "e", &p, "r2", call(runs.clone())),
        );
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(body(a.1.unwrap()).await, "once");
        assert_eq!(body(b.1.unwrap()).await, "once");
    }

    #[tokio::test]
    async fn memory_is_bounded_and_entries_expire() {
        let store = IdempotencyStore::new(&IdempotencyConfig {
            window: Duration::from_millis(200),
            max_entries: 3,
            max_bytes: 1024,
        });
        for i in 0..10 {
            let key = format!("k{i}");
            let p = parts("POST", Some(&key));
            let _ = store.run("t", "e", &p, "r", async { answer("x") }).await;
        }
        assert_eq!(store.len(), 3);
        // An answer bigger than the byte bound is not stored.
        let p = parts("POST", Some("big"));
        let big: &'static str = Box::leak("b".repeat(2048).into_boxed_str());
        let _ = store
            .run("t", "e", &p, "r", async move { answer(big) })
            .await;
        assert_eq!(store.len(), 3);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = parts("POST", Some("k9"));
        let (_, again) = store
            .run("t", "e", &p, "r", async { answer("fresh") })
            .await;
        assert_eq!(body(again.unwrap()).await, "fresh");
        assert_eq!(store.len(), 1);
    }
}
