//! Idempotent replay: a non-GET call carrying `x-idempotency-key` runs once per tenant,
//! extension and key within the window; a repeat gets the stored answer (marked with
//! `x-idempotent-replay: true`), and a concurrent duplicate waits for the first call's
//! answer. A repeat must be the same request: method, path and query, a SHA-256 digest of
//! the body and the caller's user form its fingerprint, and the key with another
//! fingerprint is refused (422 `idempotency_key_reused`). Only completed guest responses
//! are kept — a platform error (timeout, runner down, over quota…) is not, so a retry runs
//! again.
//!
//! Memory is bounded per tenant (entry count and bytes), so one tenant's calls only ever
//! push out that tenant's own older answers, and for the whole store; when the store as a
//! whole is full, the oldest answer of the tenant holding the most goes first.
//!
//! With a registry ([`IdempotencyStore::shared`]) the answers are also kept there, for
//! every gateway of the platform: a key this gateway has not seen is looked up in the
//! registry before its call runs, and an answer stored here is written there too, so a
//! retry that lands on another gateway is answered from the store. Duplicates arriving at
//! two gateways while neither has finished can both run (see docs/gateway.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};

use palisade_registry::Registry;
use palisade_registry::idempotency::{AnswerScope, IdempotentAnswer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::{ApiError, CallError};
use crate::quota::now_ms;

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
/// Default bound on the answers stored for one tenant.
pub const DEFAULT_MAX_ENTRIES_PER_TENANT: usize = 1_000;
/// Default bound on the bytes stored for one tenant: 8 MiB.
pub const DEFAULT_MAX_BYTES_PER_TENANT: usize = 8 * 1024 * 1024;

/// How idempotency keys are honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// How long an answer is replayed.
    pub window: Duration,
    /// Most answers kept.
    pub max_entries: usize,
    /// Most bytes (bodies and headers) kept; a larger single answer is not stored.
    pub max_bytes: usize,
    /// Most answers kept for one tenant; beyond it the tenant's own oldest answers go.
    pub max_entries_per_tenant: usize,
    /// Most bytes kept for one tenant; a larger single answer is not stored.
    pub max_bytes_per_tenant: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            window: DEFAULT_WINDOW,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries_per_tenant: DEFAULT_MAX_ENTRIES_PER_TENANT,
            max_bytes_per_tenant: DEFAULT_MAX_BYTES_PER_TENANT,
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

/// A request that carries an idempotency key: the key and the fingerprint a repeat must
/// match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    key: String,
    fingerprint: [u8; 32],
}

impl KeyedRequest {
    /// The request with `key`: its method, path and query, the caller's `user` and a
    /// digest of its `body` make its fingerprint.
    pub fn new(key: String, parts: &Parts, user: Option<&str>, body: &[u8]) -> Self {
        let body_digest = Sha256::digest(body);
        let mut hasher = Sha256::new();
        // Every variable-length field is length-prefixed, so no two requests share an input.
        for field in [parts.method.as_str(), &parts.uri.to_string()] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        match user {
            Some(user) => {
                hasher.update([1]);
                hasher.update((user.len() as u64).to_be_bytes());
                hasher.update(user.as_bytes());
            }
            None => hasher.update([0]),
        }
        hasher.update(body_digest);
        KeyedRequest {
            key,
            fingerprint: hasher.finalize().into(),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
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
    /// The answer as the registry keeps it.
    fn to_answer(&self, fingerprint: &Fingerprint, expires_at_ms: i64) -> IdempotentAnswer {
        IdempotentAnswer {
            fingerprint: hex::encode(fingerprint),
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            body: self.body.to_vec(),
            template: self.template.clone(),
            expires_at_ms,
        }
    }

    /// An answer the registry kept; headers that no longer parse are left out.
    fn from_answer(answer: IdempotentAnswer) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in answer.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                headers.append(name, value);
            }
        }
        StoredResponse {
            status: StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(answer.body),
            template: answer.template,
        }
    }

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

type Fingerprint = [u8; 32];
type Outcome = Option<Arc<StoredResponse>>;

enum Entry {
    Running {
        fingerprint: Fingerprint,
        done: watch::Receiver<Outcome>,
    },
    Done {
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        expires: Instant,
        seq: u64,
    },
}

/// What one tenant holds: its stored answers, oldest first, and their bytes.
#[derive(Default)]
struct TenantUse {
    seqs: VecDeque<u64>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Scope, Entry>,
    /// Stored answers by sequence number, oldest first (which is also expiry order).
    order: BTreeMap<u64, Scope>,
    /// Per tenant, its stored answers.
    tenants: HashMap<String, TenantUse>,
    bytes: usize,
    next_seq: u64,
}

impl Inner {
    /// Forgets the stored answer of `scope`, if there is one.
    fn remove_done(&mut self, scope: &Scope) {
        let Some(Entry::Done { seq, response, .. }) = self.entries.get(scope) else {
            return;
        };
        let (seq, size) = (*seq, response.size());
        self.entries.remove(scope);
        self.order.remove(&seq);
        self.bytes -= size;
        if let Some(tenant) = self.tenants.get_mut(&scope.tenant) {
            if tenant.seqs.front() == Some(&seq) {
                tenant.seqs.pop_front();
            } else {
                tenant.seqs.retain(|s| *s != seq);
            }
            tenant.bytes -= size;
            if tenant.seqs.is_empty() {
                self.tenants.remove(&scope.tenant);
            }
        }
    }

    /// Forgets the oldest stored answer of `tenant`.
    fn remove_oldest_of(&mut self, tenant: &str) {
        let scope = self
            .tenants
            .get(tenant)
            .and_then(|t| t.seqs.front())
            .and_then(|seq| self.order.get(seq))
            .cloned();
        if let Some(scope) = scope {
            self.remove_done(&scope);
        }
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some((_, scope)) = self.order.first_key_value() {
            match self.entries.get(scope) {
                Some(Entry::Done { expires, .. }) if *expires > now => break,
                _ => {
                    let scope = scope.clone();
                    self.remove_done(&scope);
                }
            }
        }
    }

    /// The tenant holding the most answers (`by_bytes`: the most bytes).
    fn largest_tenant(&self, by_bytes: bool) -> Option<String> {
        self.tenants
            .iter()
            .max_by_key(|(_, t)| if by_bytes { t.bytes } else { t.seqs.len() })
            .map(|(tenant, _)| tenant.clone())
    }
}

/// The answers kept for replay.
pub struct IdempotencyStore {
    shared: Arc<Shared>,
}

/// The store's state, shared with the leases of calls in progress (whose answers are
/// recorded as they stream, after the store's `run` has returned).
struct Shared {
    config: IdempotencyConfig,
    inner: Mutex<Inner>,
    /// Where the answers are shared with the other gateways, if anywhere.
    registry: Option<Registry>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

enum Claim {
    Replay(Arc<StoredResponse>),
    Conflict,
    Lead(Lease),
}

/// The right to run a call; dropping it unfinished lets a waiting duplicate run instead.
struct Lease {
    store: Arc<Shared>,
    scope: Scope,
    fingerprint: Fingerprint,
    done: watch::Sender<Outcome>,
    finished: bool,
}

impl Lease {
    /// Stores the answer of a call run here: in this store, and in the registry for the
    /// other gateways.
    fn complete(self, response: StoredResponse) {
        let config = &self.store.config;
        if let Some(registry) = self.store.registry.clone()
            && response.size() <= config.max_bytes_per_tenant
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let now = now_ms();
            let window = i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
            let answer = response.to_answer(&self.fingerprint, now.saturating_add(window));
            let (tenant, extension, key) = (
                self.scope.tenant.clone(),
                self.scope.extension.clone(),
                self.scope.key.clone(),
            );
            let bound = config.max_entries_per_tenant;
            runtime.spawn(async move {
                let scope = AnswerScope {
                    tenant_id: &tenant,
                    extension_id: &extension,
                    key: &key,
                };
                if let Err(error) = registry
                    .keep_idempotent_answer(scope, &answer, now, bound)
                    .await
                {
                    tracing::warn!(%error, "keeping an idempotent answer in the registry failed");
                }
            });
        }
        let expires = Instant::now() + config.window;
        self.keep(response, expires);
    }

    /// Stores `response` in this store until `expires` and hands it to waiting duplicates.
    fn keep(mut self, response: StoredResponse, expires: Instant) {
        let response = Arc::new(response);
        let size = response.size();
        let config = &self.store.config;
        let mut inner = self.store.lock();
        let storable = config.max_entries > 0
            && config.max_entries_per_tenant > 0
            && size <= config.max_bytes
            && size <= config.max_bytes_per_tenant;
        inner.remove_done(&self.scope);
        inner.entries.remove(&self.scope);
        if storable {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.bytes += size;
            inner.order.insert(seq, self.scope.clone());
            let tenant = inner.tenants.entry(self.scope.tenant.clone()).or_default();
            tenant.seqs.push_back(seq);
            tenant.bytes += size;
            inner.entries.insert(
                self.scope.clone(),
                Entry::Done {
                    fingerprint: self.fingerprint,
                    response: response.clone(),
                    expires,
                    seq,
                },
            );
            // The tenant's own budget: only its own older answers make room.
            while inner.tenants.get(&self.scope.tenant).is_some_and(|t| {
                t.seqs.len() > config.max_entries_per_tenant
                    || t.bytes > config.max_bytes_per_tenant
            }) {
                inner.remove_oldest_of(&self.scope.tenant);
            }
            // The whole store's bound: the tenant holding the most gives way.
            loop {
                let by_bytes = inner.bytes > config.max_bytes;
                if !by_bytes && inner.order.len() <= config.max_entries {
                    break;
                }
                let Some(tenant) = inner.largest_tenant(by_bytes) else {
                    break;
                };
                inner.remove_oldest_of(&tenant);
            }
        }
        drop(inner);
        self.finished = true;
        self.done.send_replace(Some(response));
    }
}

impl Drop for Lease {
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
    /// An empty store, of this gateway alone.
    pub fn new(config: &IdempotencyConfig) -> Self {
        Self::with_registry(config, None)
    }

    /// An empty store whose answers are shared through `registry` with every gateway on it.
    pub fn shared(config: &IdempotencyConfig, registry: Registry) -> Self {
        Self::with_registry(config, Some(registry))
    }

    fn with_registry(config: &IdempotencyConfig, registry: Option<Registry>) -> Self {
        IdempotencyStore {
            shared: Arc::new(Shared {
                config: config.clone(),
                inner: Mutex::new(Inner::default()),
                registry,
            }),
        }
    }

    /// Looks the key of `lease` up in the registry: the answer another gateway stored (kept
    /// here too, and handed to waiting duplicates), a conflict, or nothing (the call runs).
    async fn claim_shared(&self, lease: Lease) -> Result<Claim, CallError> {
        let Some(registry) = &self.shared.registry else {
            return Ok(Claim::Lead(lease));
        };
        let now = now_ms();
        let scope = AnswerScope {
            tenant_id: &lease.scope.tenant,
            extension_id: &lease.scope.extension,
            key: &lease.scope.key,
        };
        let Some(answer) = registry.idempotent_answer(scope, now).await? else {
            return Ok(Claim::Lead(lease));
        };
        if answer.fingerprint != hex::encode(lease.fingerprint) {
            return Ok(Claim::Conflict);
        }
        let left = u64::try_from(answer.expires_at_ms.saturating_sub(now)).unwrap_or(0);
        let expires = Instant::now() + Duration::from_millis(left).min(self.shared.config.window);
        let response = StoredResponse::from_answer(answer);
        let replay = Arc::new(response.clone());
        lease.keep(response, expires);
        Ok(Claim::Replay(replay))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// How many answers are stored.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no answer is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many answers are stored for `tenant`.
    pub fn tenant_len(&self, tenant: &str) -> usize {
        self.lock().tenants.get(tenant).map_or(0, |t| t.seqs.len())
    }

    async fn claim(&self, scope: Scope, fingerprint: Fingerprint) -> Claim {
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
                                fingerprint,
                                done: receiver,
                            },
                        );
                        return Claim::Lead(Lease {
                            store: Arc::clone(&self.shared),
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

    /// Runs `call` at most once for `request`'s key (when the request has one) and returns
    /// its endpoint template and answer, or the stored ones.
    pub(crate) async fn run<F>(
        &self,
        tenant: &str,
        extension: &str,
        request: Option<KeyedRequest>,
        request_id: &str,
        call: F,
    ) -> (Option<String>, Result<Response, ApiError>)
    where
        F: Future<Output = (Option<String>, Result<Response, ApiError>)>,
    {
        let Some(KeyedRequest { key, fingerprint }) = request else {
            return call.await;
        };
        let scope = Scope {
            tenant: tenant.to_owned(),
            extension: extension.to_owned(),
            key,
        };
        let claim = match self.claim(scope, fingerprint).await {
            Claim::Lead(lease) => match self.claim_shared(lease).await {
                Ok(claim) => claim,
                Err(error) => return (None, Err(error.into_api_error(request_id))),
            },
            claim => claim,
        };
        let lease = match claim {
            Claim::Replay(stored) => {
                tracing::info!("idempotent replay");
                return (stored.template.clone(), Ok(stored.replay()));
            }
            Claim::Conflict => {
                let error = CallError::IdempotencyKeyReused.into_api_error(request_id);
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
        let config = &self.shared.config;
        let headers_size: usize = head
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let room = config
            .max_bytes
            .min(config.max_bytes_per_tenant)
            .saturating_sub(headers_size);
        let recording = Recording {
            body,
            lease: Some(lease),
            kept: Some(Vec::new()),
            room,
            status: head.status,
            headers: head.headers.clone(),
            template: template.clone(),
        };
        head.headers.remove(REPLAY_HEADER);
        (
            template,
            Ok(Response::from_parts(head, Body::new(recording))),
        )
    }
}

/// A guest's answer on its way to the caller, recorded for replay as it streams: stored
/// when it ends whole and fits the store, dropped (and so run again on a retry) when it is
/// cut, aborted or larger.
struct Recording {
    body: Body,
    lease: Option<Lease>,
    /// The bytes so far; `None` once the answer outgrew `room`.
    kept: Option<Vec<u8>>,
    room: usize,
    status: StatusCode,
    headers: HeaderMap,
    template: Option<String>,
}

impl http_body::Body for Recording {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let fits = this
                        .kept
                        .as_ref()
                        .is_some_and(|kept| kept.len() + data.len() <= this.room);
                    match &mut this.kept {
                        Some(kept) if fits => kept.extend_from_slice(data),
                        _ => {
                            if this.kept.take().is_some() {
                                tracing::info!(
                                    room = this.room,
                                    "answer too large for the idempotency store; not kept"
                                );
                            }
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.kept = None;
                this.lease = None;
            }
            Poll::Ready(None) => {
                if let (Some(lease), Some(kept)) = (this.lease.take(), this.kept.take()) {
                    lease.complete(StoredResponse {
                        status: this.status,
                        headers: std::mem::take(&mut this.headers),
                        body: Bytes::from(kept),
                        template: this.template.take(),
                    });
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    // Never `true` early: the answer is stored when the body is polled to its end.
    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_protocol::ErrorCode;

    fn parts(method: &str, key: Option<&str>) -> Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/api/ext/x/items");
        if let Some(key) = key {
            builder = builder.header(IDEMPOTENCY_KEY, key);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// The keyed request of `parts` sent by `alice` with an empty body.
    fn keyed(parts: &Parts) -> Option<KeyedRequest> {
        keyed_as(parts, Some("alice"), b"")
    }

    fn keyed_as(parts: &Parts, user: Option<&str>, body: &[u8]) -> Option<KeyedRequest> {
        request_key(&parts.method, &parts.headers)
            .unwrap()
            .map(|key| KeyedRequest::new(key, parts, user, body))
    }

    fn answer(body: &'static str) -> (Option<String>, Result<Response, ApiError>) {
        (
            Some("/items".into()),
            Ok((StatusCode::CREATED, body).into_response()),
        )
    }

    /// Runs `call` through `store` and reads the answer to its end, as a caller would (an
    /// answer is stored when its body has been sent whole).
    async fn ran<F>(
        store: &IdempotencyStore,
        tenant: &str,
        extension: &str,
        request: Option<KeyedRequest>,
        request_id: &str,
        call: F,
    ) -> (Option<String>, Result<Response, ApiError>)
    where
        F: Future<Output = (Option<String>, Result<Response, ApiError>)>,
    {
        let (template, result) = store
            .run(tenant, extension, request, request_id, call)
            .await;
        let result = match result {
            Ok(response) => {
                let (head, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                Ok(Response::from_parts(head, Body::from(bytes)))
            }
            Err(error) => Err(error),
        };
        (template, result)
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

    #[test]
    fn fingerprints_cover_method_path_user_and_body() {
        let p = parts("POST", Some("k"));
        let base = keyed_as(&p, Some("alice"), b"one").unwrap();
        assert_eq!(base, keyed_as(&p, Some("alice"), b"one").unwrap());
        assert_eq!(base.key(), "k");
        assert_ne!(base, keyed_as(&p, Some("alice"), b"two").unwrap());
        assert_ne!(base, keyed_as(&p, Some("bob"), b"one").unwrap());
        assert_ne!(base, keyed_as(&p, None, b"one").unwrap());
        assert_ne!(
            base,
            keyed_as(&parts("PUT", Some("k")), Some("alice"), b"one").unwrap()
        );
        // No field can be shifted into its neighbour.
        assert_ne!(
            keyed_as(&p, Some("a"), b"").unwrap(),
            keyed_as(&p, None, b"a").unwrap()
        );
    }

    #[tokio::test]
    async fn second_call_is_replayed_and_scoped() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let p = parts("POST", Some("k"));
        let (_, first) = ran(&store, "t", "e", keyed(&p), "r1", async { answer("one") }).await;
        let first = first.unwrap();
        assert!(first.headers().get(REPLAY_HEADER).is_none());
        assert_eq!(body(first).await, "one");
        let (template, second) =
            ran(&store, "t", "e", keyed(&p), "r2", async { answer("two") }).await;
        let second = second.unwrap();
        assert_eq!(template.as_deref(), Some("/items"));
        assert_eq!(second.status(), StatusCode::CREATED);
        assert_eq!(second.headers()[REPLAY_HEADER], "true");
        assert_eq!(body(second).await, "one");
        // Another tenant or extension runs its own call.
        let (_, other) = ran(&store, "t2", "e", keyed(&p), "r3", async {
            answer("three")
        })
        .await;
        assert_eq!(body(other.unwrap()).await, "three");
        let (_, other) = ran(&store, "t", "e2", keyed(&p), "r4", async { answer("four") }).await;
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
        let (_, conflict) = ran(&store, "t", "e", keyed(&moved), "r5", async { answer("x") }).await;
        let conflict = conflict.unwrap_err();
        assert_eq!(conflict.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(conflict.code, ErrorCode::IdempotencyKeyReused);
    }

    #[tokio::test]
    async fn another_body_or_user_under_the_same_key_is_refused() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let p = parts("POST", Some("k"));
        let (_, first) = ran(
            &store,
            "t",
            "e",
            keyed_as(&p, Some("alice"), b"one"),
            "r1",
            async { answer("stored") },
        )
        .await;
        assert_eq!(body(first.unwrap()).await, "stored");
        for (user, sent) in [
            (Some("alice"), &b"two"[..]),
            (Some("bob"), b"one"),
            (None, b"one"),
        ] {
            let (_, refused) = ran(&store, "t", "e", keyed_as(&p, user, sent), "r2", async {
                answer("ran")
            })
            .await;
            assert_eq!(
                refused.unwrap_err().code,
                ErrorCode::IdempotencyKeyReused,
                "{user:?}"
            );
        }
        let (_, again) = ran(
            &store,
            "t",
            "e",
            keyed_as(&p, Some("alice"), b"one"),
            "r3",
            async { answer("ran") },
        )
        .await;
        assert_eq!(body(again.unwrap()).await, "stored");
    }

    #[tokio::test]
    async fn platform_errors_are_not_stored() {
        let store = IdempotencyStore::new(&IdempotencyConfig::default());
        let p = parts("POST", Some("k"));
        let (_, first) = ran(&store, "t", "e", keyed(&p), "r1", async {
            (None, Err(ApiError::new(ErrorCode::Unavailable, "r1")))
        })
        .await;
        assert!(first.is_err());
        assert!(store.is_empty());
        let (_, second) = ran(&store, "t", "e", keyed(&p), "r2", async { answer("ran") }).await;
        assert_eq!(body(second.unwrap()).await, "ran");
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
            ran(&store, "t", "e", keyed(&p), "r1", call(runs.clone())),
            ran(&store, "t", "e", keyed(&p), "r2", call(runs.clone())),
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
            ..IdempotencyConfig::default()
        });
        for i in 0..10 {
            let key = format!("k{i}");
            let p = parts("POST", Some(&key));
            let _ = ran(&store, "t", "e", keyed(&p), "r", async { answer("x") }).await;
        }
        assert_eq!(store.len(), 3);
        // An answer bigger than the byte bound is not stored.
        let p = parts("POST", Some("big"));
        let big: &'static str = Box::leak("b".repeat(2048).into_boxed_str());
        let _ = ran(&store, "t", "e", keyed(&p), "r", async move { answer(big) }).await;
        assert_eq!(store.len(), 3);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = parts("POST", Some("k9"));
        let (_, again) = ran(&store, "t", "e", keyed(&p), "r", async { answer("fresh") }).await;
        assert_eq!(body(again.unwrap()).await, "fresh");
        assert_eq!(store.len(), 1);
        assert_eq!(store.tenant_len("t"), 1);
    }

    /// Stores an answer for `tenant` under `key` and says whether it ran (not a replay).
    async fn store_one(store: &IdempotencyStore, tenant: &str, key: &str) -> bool {
        let p = parts("POST", Some(key));
        let (_, result) = ran(store, tenant, "e", keyed(&p), "r", async { answer("x") }).await;
        result.unwrap().headers().get(REPLAY_HEADER).is_none()
    }

    #[tokio::test]
    async fn each_tenant_has_its_own_budget() {
        let store = IdempotencyStore::new(&IdempotencyConfig {
            max_entries: 100,
            max_entries_per_tenant: 3,
            ..IdempotencyConfig::default()
        });
        assert!(store_one(&store, "quiet", "q").await);
        for i in 0..50 {
            assert!(store_one(&store, "noisy", &format!("n{i}")).await);
        }
        // The noisy tenant pushed out only its own answers.
        assert_eq!(store.tenant_len("noisy"), 3);
        assert_eq!(store.tenant_len("quiet"), 1);
        assert!(!store_one(&store, "quiet", "q").await, "quiet was evicted");
        assert!(!store_one(&store, "noisy", "n49").await);
        assert!(store_one(&store, "noisy", "n0").await);

        // Byte budget per tenant: an answer over it is not stored at all.
        let store = IdempotencyStore::new(&IdempotencyConfig {
            max_bytes_per_tenant: 100,
            ..IdempotencyConfig::default()
        });
        let p = parts("POST", Some("big"));
        let big: &'static str = Box::leak("b".repeat(200).into_boxed_str());
        let _ = ran(&store, "t", "e", keyed(&p), "r", async move { answer(big) }).await;
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_full_store_takes_room_from_the_tenant_holding_most() {
        let store = IdempotencyStore::new(&IdempotencyConfig {
            max_entries: 4,
            ..IdempotencyConfig::default()
        });
        assert!(store_one(&store, "quiet", "q").await);
        for i in 0..20 {
            assert!(store_one(&store, "noisy", &format!("n{i}")).await);
        }
        assert_eq!(store.len(), 4);
        assert_eq!(store.tenant_len("quiet"), 1);
        assert!(!store_one(&store, "quiet", "q").await, "quiet was evicted");
    }
}
