//! One call: a fresh store and instance, the request handed to the guest's
//! `wasi:http/incoming-handler`, the response collected under the call's limits.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::Instrument;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::Resource;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use palisade_bundle::manifest::Capabilities;
use palisade_protocol::TraceParent;

use crate::capability::Prepare;
use crate::capability::context::ContextState;
use crate::capability::http::{EgressCounters, EgressHooks};
use crate::capability::log::{LogLine, SharedLog};
use crate::capture::Capture;
use crate::engine::{Prepared, Runtime};
use crate::error::ExecuteError;
use crate::limits::MemoryLimiter;
use crate::state::InstanceState;

/// The authority of the request URI the guest sees.
const GUEST_AUTHORITY: &str = "extension.local";

/// Identifiers of one call, as the guest sees them through `context`.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// Unique id of the call.
    pub request_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The extension id.
    pub extension_id: String,
    /// The install id.
    pub install_id: String,
    /// The version's registry id.
    pub version_id: String,
    /// The semantic version string.
    pub version: String,
    /// `sha256:<hex>` of the bundle.
    pub content_hash: String,
    /// What started the call (`http`, `event`, `schedule`).
    pub trigger: String,
    /// The calling user (the `sub` of the caller's token), when one called.
    pub user: Option<String>,
    /// The position in a trace this call continues (the previous hop's span); `None`
    /// starts a trace. The call's own span is its child, and the runtime puts that span's
    /// position here once it exists: its trace id is on every log line of the call, and
    /// its children go out as `traceparent` on the egress requests.
    pub trace: Option<TraceParent>,
    /// The install's non-secret configuration.
    pub config: BTreeMap<String, String>,
    /// The install's effective grant (manifest ∩ approval ∩ policy): fine-grained
    /// capabilities read their namespaces, secret names and origins from here.
    pub grants: Capabilities,
}

/// The effective limits of one call (already the minimum of manifest and operator policy).
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Deadline of the whole call.
    pub timeout: Duration,
    /// Linear memory cap of the instance, in bytes.
    pub memory_bytes: usize,
    /// Fuel for the call, when fuel is enabled in the engine.
    pub fuel: Option<u64>,
    /// Response body cap, in bytes.
    pub max_response_bytes: usize,
}

/// The body a guest reads: the caller's, as it arrives.
pub type RequestBody = UnsyncBoxBody<Bytes, RequestBodyError>;

/// Why the caller's request body stopped before its end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestBodyError {
    /// The body is longer than the call's limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    /// The caller's side of the connection broke.
    #[error("request body aborted: {0}")]
    Aborted(String),
}

/// How a call began.
#[derive(Debug)]
pub enum Started {
    /// The guest set its response head; its body follows.
    Responded(GuestResponse),
    /// The call ended without a response.
    Failed(Outcome),
}

/// The guest's HTTP response: its head, sent on as soon as the guest sets it, and its body,
/// which streams while the guest writes it.
#[derive(Debug)]
pub struct GuestResponse {
    /// Status code.
    pub status: http::StatusCode,
    /// Headers, in the guest's order.
    pub headers: http::HeaderMap,
    /// The body, then the call's outcome.
    pub body: GuestBody,
}

/// A whole answer, read by [`Started::collect`].
#[derive(Debug)]
pub struct Collected {
    /// The guest's status, when it set one.
    pub status: Option<http::StatusCode>,
    /// The body as far as it went.
    pub body: Bytes,
    /// How the call ended.
    pub outcome: Outcome,
}

impl Started {
    /// Reads the whole answer (for tools and tests; a server streams the body instead).
    pub async fn collect(self) -> Collected {
        match self {
            Started::Failed(outcome) => Collected {
                status: None,
                body: Bytes::new(),
                outcome,
            },
            Started::Responded(mut response) => {
                let mut body = Vec::new();
                loop {
                    match response.body.next_event().await {
                        Some(BodyEvent::Data(data)) => body.extend_from_slice(&data),
                        Some(BodyEvent::End(outcome)) => {
                            return Collected {
                                status: Some(response.status),
                                body: Bytes::from(body),
                                outcome: *outcome,
                            };
                        }
                        // `next_event` always ends with `End`.
                        None => {
                            return Collected {
                                status: Some(response.status),
                                body: Bytes::from(body),
                                outcome: host_panic("body ended twice".into(), Instant::now()),
                            };
                        }
                    }
                }
            }
        }
    }
}

/// What a guest's response body yields.
#[derive(Debug)]
pub enum BodyEvent {
    /// The next bytes of the body.
    Data(Bytes),
    /// The call is over; the body ends here. `outcome.result` is `Ok` when the body is
    /// whole, otherwise why it was cut.
    End(Box<Outcome>),
}

/// Events buffered between a call and its reader: with chunks of at most
/// [`BODY_CHUNK_BYTES`], a call holds at most this many of them in memory.
const BODY_EVENTS: usize = 4;

/// Largest chunk a guest's body is handed on in.
pub const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// The streaming body of a [`GuestResponse`]. Dropping it ends the call.
#[derive(Debug)]
pub struct GuestBody {
    events: mpsc::Receiver<BodyEvent>,
    ended: bool,
    started: Instant,
    /// When the call runs on a task of its own, dropping the body aborts it.
    call: Option<AbortOnDrop>,
}

impl GuestBody {
    fn new(events: mpsc::Receiver<BodyEvent>, started: Instant) -> Self {
        GuestBody {
            events,
            ended: false,
            started,
            call: None,
        }
    }

    /// The next event; `None` after [`BodyEvent::End`].
    pub fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<BodyEvent>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(BodyEvent::Data(data))) => Poll::Ready(Some(BodyEvent::Data(data))),
            Poll::Ready(Some(end @ BodyEvent::End(_))) => {
                self.ended = true;
                Poll::Ready(Some(end))
            }
            // The call ended without saying how: its host code panicked.
            Poll::Ready(None) => {
                self.ended = true;
                let outcome = host_panic("call ended without an outcome".into(), self.started);
                Poll::Ready(Some(BodyEvent::End(Box::new(outcome))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next event; `None` after [`BodyEvent::End`].
    pub async fn next_event(&mut self) -> Option<BodyEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }
}

/// What a call produced, with what the execution log records about it.
#[derive(Debug)]
pub struct Outcome {
    /// `Ok` when the guest answered and its body is whole; otherwise why not.
    pub result: Result<(), ExecuteError>,
    /// Response body bytes handed on.
    pub response_bytes: u64,
    /// Lines the guest logged (including captured stdout/stderr), bounded.
    pub logs: Vec<LogLine>,
    /// Lines dropped past the bound.
    pub dropped_log_lines: u64,
    /// Wall-clock duration of the call.
    pub duration: Duration,
    /// Peak linear memory of the instance, in bytes.
    pub peak_memory_bytes: u64,
    /// Fuel consumed, when fuel is enabled.
    pub fuel_consumed: Option<u64>,
    /// Bytes the guest's outgoing HTTP requests wrote to the network.
    pub egress_bytes_out: u64,
    /// Bytes the guest's outgoing HTTP requests read from the network.
    pub egress_bytes_in: u64,
}

impl Runtime {
    /// Runs `request` through a fresh instance of `prepared`, and answers as soon as the
    /// guest has set its response head (or failed without one). The body then streams from
    /// [`GuestResponse::body`] while the guest writes it, under the call's deadline and
    /// response limit; dropping the body ends the call.
    ///
    /// With `inline_calls` (the default) the call starts on the caller's task, which costs
    /// no thread hand-off; a call that is over by the time its head is known never leaves
    /// it. If its guest code is still running at an epoch tick, or its body is still being
    /// written when the head is handed back, the rest of the call moves to the guest
    /// threads, so that a long-running guest never holds a thread that serves requests.
    /// Without it, every call runs on the guest threads.
    pub async fn execute<B>(
        &self,
        prepared: &Prepared,
        mut invocation: Invocation,
        request: http::Request<B>,
        limits: CallLimits,
    ) -> Started
    where
        B: http_body::Body<Data = Bytes, Error = RequestBodyError> + Send + 'static,
    {
        let started = Instant::now();
        let ticked = Arc::new(AtomicBool::new(false));
        let runtime = self.clone();
        let prepared = prepared.clone();
        let flag = Arc::clone(&ticked);
        let (started_tx, mut started_rx) = oneshot::channel();
        let request = request.map(|body| body.boxed_unsync());
        // The call's identity lives here, once: every log line of the call, the host's
        // and the capabilities', is written inside this span, wherever the call runs.
        let span = tracing::info_span!(
            "invocation",
            request_id = %invocation.request_id,
            tenant = %invocation.tenant_id,
            extension = %invocation.extension_id,
            install = %invocation.install_id,
            version = %invocation.version,
            content_hash = %invocation.content_hash,
            trace_id = tracing::field::Empty,
        );
        let position = palisade_protocol::trace::join(&span, invocation.trace);
        span.record("trace_id", position.trace_id().as_str());
        // From here on, what the capabilities see is the call's own position.
        invocation.trace = Some(position);
        let call = async move {
            runtime
                .run_call(&prepared, invocation, request, limits, flag, started_tx)
                .await;
        }
        .instrument(span);
        // A panic in host code ends this call alone; the reader sees it like a trap.
        let mut call: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            if let Err(panic) = AssertUnwindSafe(call).catch_unwind().await {
                tracing::error!(panic = %panic_message(&*panic), "host code panicked in a call");
            }
        });
        let executor = self.executor.handle();
        if self.config.inline_calls || executor.is_none() {
            // Once the head is known the call stays here while it only yields to itself
            // (its body fits the buffer and nothing outside is awaited): a short answer
            // then completes without a thread hand-off. As soon as it waits for something
            // else (the reader, a timer, the network) or an epoch tick passes, the head is
            // handed back and the rest of the call moves to the guest threads.
            let woken = Arc::new(SelfWake::default());
            // One waker for the whole call; each poll only points it at the task's own.
            let waker = Waker::from(Arc::clone(&woken));
            let mut head: Option<Started> = None;
            let step = std::future::poll_fn(|cx| {
                woken.arm(cx.waker());
                let done = call
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(&waker))
                    .is_ready();
                if head.is_none() {
                    match started_rx.try_recv() {
                        Ok(started) => head = Some(started),
                        Err(oneshot::error::TryRecvError::Closed) => {
                            let outcome =
                                host_panic("call ended without a response".into(), started);
                            return Poll::Ready(Some((Started::Failed(outcome), true)));
                        }
                        Err(oneshot::error::TryRecvError::Empty) => {}
                    }
                }
                let ticked = executor.is_some() && ticked.load(Ordering::Relaxed);
                if let Some(started) = head.take() {
                    if done || ticked || !woken.take() {
                        return Poll::Ready(Some((started, done)));
                    }
                    head = Some(started);
                }
                if ticked {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            })
            .await;
            match step {
                Some((head, true)) => return head,
                Some((mut head, false)) => {
                    // The body is still being written: the rest of the call gets a task of
                    // its own, which the body's reader ends by dropping the body.
                    let task = match &executor {
                        Some(executor) => executor.spawn(call),
                        None => tokio::spawn(call),
                    };
                    if let Started::Responded(response) = &mut head {
                        response.body.call = Some(AbortOnDrop(task.abort_handle()));
                    }
                    return head;
                }
                None => {}
            }
        }
        let Some(executor) = executor else {
            return Started::Failed(host_panic("no guest executor".into(), started));
        };
        let task = executor.spawn(call);
        // Dropping this future (the caller went away) ends the call and its instance.
        let guard = AbortOnDrop(task.abort_handle());
        match started_rx.await {
            Ok(Started::Responded(mut response)) => {
                response.body.call = Some(guard);
                Started::Responded(response)
            }
            Ok(failed) => failed,
            Err(_) => Started::Failed(host_panic("call ended without a response".into(), started)),
        }
    }

    /// One call, on the current task: the guest and the forwarding of its response are
    /// polled together. The head (or the failure) goes to `started`, the body to the
    /// [`GuestBody`] handed over with the head.
    async fn run_call(
        &self,
        prepared: &Prepared,
        invocation: Invocation,
        request: http::Request<RequestBody>,
        limits: CallLimits,
        ticked: Arc<AtomicBool>,
        started_tx: oneshot::Sender<Started>,
    ) {
        let started = Instant::now();
        let timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
        let (mut store, record, fuel_granted) =
            self.new_store(invocation, &limits, ticked, started);
        let (req, out, head) = match incoming(&mut store, request) {
            Ok(parts) => parts,
            Err(e) => {
                let mut outcome = record.finish(&store, fuel_granted);
                outcome.result = Err(ExecuteError::Instantiate(e));
                let _ = started_tx.send(Started::Failed(outcome));
                return;
            }
        };
        let pre = prepared.pre.clone();
        let finished = record.clone();
        // The guest runs inside this task, polled together with the forwarding of its
        // response: no hand-off between threads during the call. When it returns, what the
        // call consumed is read off its store, and the store is dropped, which ends a body
        // the guest left unfinished.
        let guest = async move {
            let result = match pre.instantiate_async(&mut store).await {
                Ok(proxy) => proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
                    .map_err(|e| (Stage::Call, e)),
                Err(e) => Err((Stage::Instantiate, e)),
            };
            let refused = store.data().limiter.refused();
            let result = result.map_err(|(stage, e)| classify(stage, e, refused, timeout_ms));
            (result, finished.finish(&store, fuel_granted))
        };
        // The epoch deadline traps guest code; this later bound also covers host calls
        // that block and guests that never finish their body.
        let grace = Duration::from_millis(self.config.epoch_tick_ms.max(1) * 3 + 50);
        let expired =
            tokio::time::sleep_until(tokio::time::Instant::now() + limits.timeout + grace);
        let (guest, expired) = (std::pin::pin!(guest), std::pin::pin!(expired));
        let mut run = CallRun {
            guest,
            expired,
            returned: None,
            record: &record,
            timeout_ms,
        };

        // 1. Run the guest until it sets the response head, or ends without one.
        // (Returning early drops the guest future, which ends the instance.)
        let response = match run.head(head).await {
            Ok(response) => response,
            Err(outcome) => {
                let _ = started_tx.send(Started::Failed(outcome));
                return;
            }
        };
        // 2. Hand the head on, then the body while the guest goes on writing it.
        let (parts, body) = response.into_parts();
        let (events, events_rx) = mpsc::channel(BODY_EVENTS);
        let head = GuestResponse {
            status: parts.status,
            headers: parts.headers,
            body: GuestBody::new(events_rx, started),
        };
        if started_tx.send(Started::Responded(head)).is_err() {
            return; // The caller went away.
        }
        let max_response = limits
            .max_response_bytes
            .min(self.config.max_response_bytes);
        let Some((result, sent)) = run.forward(body, &events, max_response).await else {
            return; // The reader went away: the call ends here.
        };
        // 3. Let the guest return; its trap, if any, is the call's outcome.
        let outcome = run.finish(result, sent).await;
        let _ = events.send(BodyEvent::End(Box::new(outcome))).await;
    }
}

/// The head the guest sets: its response, or the error code it gave instead.
type Head = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// What the guest future gives when the guest returns: how it ended, and the call's
/// outcome read off its store.
type Joined = (Result<(), ExecuteError>, Outcome);

/// The guest's incoming request and response outparam for `request`, and where its
/// response head will arrive.
fn incoming(
    store: &mut Store<InstanceState>,
    request: http::Request<RequestBody>,
) -> wasmtime::Result<(
    Resource<HostIncomingRequest>,
    Resource<HostResponseOutparam>,
    oneshot::Receiver<Head>,
)> {
    let (tx, rx) = oneshot::channel();
    let request = to_incoming(request, GUEST_AUTHORITY)?;
    let mut http = store.data_mut().http();
    let req = http.new_incoming_request(Scheme::Http, request)?;
    let out = http.new_response_outparam(tx)?;
    Ok((req, out, rx))
}

/// A call in progress after its setup: the guest (polled only from here) and the call's
/// last deadline. Each phase of [`Runtime::run_call`] is one method.
struct CallRun<'a, G> {
    guest: Pin<&'a mut G>,
    expired: Pin<&'a mut tokio::time::Sleep>,
    /// The guest's result, once it has returned.
    returned: Option<Joined>,
    record: &'a CallRecord,
    timeout_ms: u64,
}

impl<G: Future<Output = Joined>> CallRun<'_, G> {
    /// The outcome of a call cut off at its deadline before its guest returned.
    fn timed_out(&self, response_bytes: u64) -> Outcome {
        self.record
            .outcome(Err(ExecuteError::Timeout(self.timeout_ms)), response_bytes)
    }

    /// Waits for the guest to return, unless it has; `Err` with the outcome when the
    /// deadline passes first.
    async fn join(&mut self, response_bytes: u64) -> Result<Joined, Outcome> {
        if let Some(joined) = self.returned.take() {
            return Ok(joined);
        }
        tokio::select! {
            biased;
            joined = self.guest.as_mut() => Ok(joined),
            () = self.expired.as_mut() => Err(self.timed_out(response_bytes)),
        }
    }

    /// Phase 1: runs the guest until it sets its response head. Without one (the guest
    /// returned, set an error, trapped, or the deadline passed), the failed outcome.
    async fn head(
        &mut self,
        mut head: oneshot::Receiver<Head>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Outcome> {
        let set = tokio::select! {
            biased;
            set = &mut head => set.ok(),
            joined = self.guest.as_mut() => {
                self.returned = Some(joined);
                head.try_recv().ok()
            }
            () = self.expired.as_mut() => return Err(self.timed_out(0)),
        };
        let error = match set {
            Some(Ok(response)) => return Ok(response),
            Some(Err(code)) => {
                ExecuteError::NoResponse(format!("guest set an error response: {code:?}"))
            }
            None => ExecuteError::NoResponse("guest returned without setting a response".into()),
        };
        // Let the guest return; its trap, if any, explains the missing response.
        let (result, mut outcome) = self.join(0).await?;
        outcome.result = Err(result.err().unwrap_or(error));
        Err(outcome)
    }

    /// Phase 2: forwards the body to `events` while the guest goes on writing it, at most
    /// `max_response` bytes. Returns how the body ended (`Ok` when whole, else why it was
    /// cut) and the bytes sent; `None` when the reader went away.
    async fn forward(
        &mut self,
        mut body: HyperOutgoingBody,
        events: &mpsc::Sender<BodyEvent>,
        max_response: usize,
    ) -> Option<(Result<(), ExecuteError>, u64)> {
        let mut sent: u64 = 0;
        let mut pending: Option<Bytes> = None;
        // Set when the body is over: `Ok` when whole, else why it was cut.
        let mut ended: Option<Result<(), ExecuteError>> = None;
        let result = loop {
            if pending.is_none()
                && let Some(result) = ended.take()
            {
                break result;
            }
            tokio::select! {
                biased;
                () = self.expired.as_mut() => break Err(ExecuteError::Timeout(self.timeout_ms)),
                permit = events.reserve(), if pending.is_some() => match permit {
                    Ok(permit) => permit.send(BodyEvent::Data(pending.take().unwrap_or_default())),
                    Err(_) => return None,
                },
                frame = body.frame(), if pending.is_none() && ended.is_none() => match frame {
                    None => ended = Some(Ok(())),
                    Some(Err(e)) => ended = Some(Err(ExecuteError::BodyIncomplete(e.to_string()))),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        let room = usize::try_from(max_response as u64 - sent).unwrap_or(usize::MAX);
                        if data.len() > room {
                            ended = Some(Err(ExecuteError::ResponseTooLarge(max_response)));
                        }
                        let data = data.slice(..data.len().min(room));
                        sent += data.len() as u64;
                        pending = (!data.is_empty()).then_some(data);
                    }
                },
                joined = self.guest.as_mut(), if self.returned.is_none() => {
                    let failed = joined.0.is_err();
                    self.returned = Some(joined);
                    // A guest that failed while writing its body cuts it here.
                    if failed {
                        break Ok(());
                    }
                }
            }
        };
        Some((result, sent))
    }

    /// Phase 3: the call's outcome once the guest has returned (its trap, if any, is the
    /// outcome); a body cut short ends the call without waiting for the guest.
    async fn finish(mut self, result: Result<(), ExecuteError>, sent: u64) -> Outcome {
        if self.returned.is_none() && result.is_err() {
            return self.record.outcome(result, sent);
        }
        match self.join(sent).await {
            Ok((guest_result, mut outcome)) => {
                outcome.result = guest_result.and(result);
                outcome.response_bytes = sent;
                outcome
            }
            Err(timed_out) => timed_out,
        }
    }
}

impl Runtime {
    /// The store of one call: the capabilities its grant includes, prepared; its memory
    /// limiter, epoch deadline and fuel set. Returns the store, the call's record, and
    /// the fuel granted when fuel is counted.
    fn new_store(
        &self,
        invocation: Invocation,
        limits: &CallLimits,
        ticked: Arc<AtomicBool>,
        started: Instant,
    ) -> (Store<InstanceState>, CallRecord, Option<u64>) {
        // The invocation span `execute` runs this call in.
        let span = tracing::Span::current();
        let deadline = started + limits.timeout;
        let log = self
            .capabilities
            .log
            .call_log(&invocation.install_id, &span);
        let caps = self.capabilities.prepare(&Prepare {
            invocation: &invocation,
            deadline,
            log: &log,
        });
        let egress = caps
            .http
            .as_ref()
            .map_or_else(Default::default, EgressHooks::counters);
        let state = InstanceState::new(
            &self.config,
            ContextState::new(invocation),
            caps,
            MemoryLimiter::new(limits.memory_bytes),
        );
        let record = CallRecord {
            log,
            stdout: state.stdout.clone(),
            stderr: state.stderr.clone(),
            egress,
            started,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every epoch tick, running guest code yields (and, when it started inline, moves to
        // the guest threads) so a spinning guest never holds a serving thread; once the
        // call's deadline has passed, it traps.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else {
                ticked.store(true, Ordering::Relaxed);
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let fuel_granted = self.config.fuel.then(|| {
            let fuel = limits.fuel.unwrap_or(self.config.fuel_per_call);
            // Fuel is enabled in the engine, so setting it cannot fail.
            let _ = store.set_fuel(fuel);
            fuel
        });
        (store, record, fuel_granted)
    }
}

/// What a call leaves outside its store: its log, captured output and egress counters,
/// so that a call cut off while its instance is inside a host call still reports them.
#[derive(Clone)]
struct CallRecord {
    log: SharedLog,
    stdout: Capture,
    stderr: Capture,
    egress: Arc<EgressCounters>,
    started: Instant,
}

impl CallRecord {
    /// The outcome of the call so far, without what only its store knows.
    fn outcome(&self, result: Result<(), ExecuteError>, response_bytes: u64) -> Outcome {
        let (logs, dropped_log_lines) = drain_logs(&self.log, &self.stdout, &self.stderr);
        Outcome {
            result,
            response_bytes,
            logs,
            dropped_log_lines,
            duration: self.started.elapsed(),
            peak_memory_bytes: 0,
            fuel_consumed: None,
            egress_bytes_out: self.egress.bytes_out(),
            egress_bytes_in: self.egress.bytes_in(),
        }
    }

    /// The outcome of a call whose guest returned, with its peak memory and fuel.
    fn finish(&self, store: &Store<InstanceState>, fuel_granted: Option<u64>) -> Outcome {
        let mut outcome = self.outcome(Ok(()), 0);
        outcome.peak_memory_bytes = store.data().limiter.peak() as u64;
        outcome.fuel_consumed =
            fuel_granted.and_then(|g| store.get_fuel().ok().map(|left| g - left.min(g)));
        outcome
    }
}

/// A waker that remembers whether it was woken, around the task's own: tells a call that
/// yielded to itself (woken while being polled) from one waiting on something else.
#[derive(Default)]
struct SelfWake {
    woken: AtomicBool,
    inner: std::sync::Mutex<Option<Waker>>,
}

impl SelfWake {
    /// Readies the waker for one poll of the call: it wakes `task` too; clears the flag.
    fn arm(&self, task: &Waker) {
        self.woken.store(false, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.as_ref().is_some_and(|w| w.will_wake(task)) {
            *inner = Some(task.clone());
        }
    }

    /// Whether the call was woken since the last [`SelfWake::arm`].
    fn take(&self) -> bool {
        self.woken.swap(false, Ordering::Relaxed)
    }
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        if let Some(task) = &*self.inner.lock().unwrap_or_else(PoisonError::into_inner) {
            task.wake_by_ref();
        }
    }
}

fn to_incoming(
    request: http::Request<RequestBody>,
    authority: &str,
) -> wasmtime::Result<http::Request<UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>>> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    parts.uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()?;
    let body = body
        .map_err(|error| match error {
            RequestBodyError::TooLarge(limit) => {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
            }
            RequestBodyError::Aborted(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
        })
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

/// What the call consumed, read off its store (`result` is set by the caller).
/// The call's log lines so far, with its captured stdout and stderr added line by line,
/// and the number of lines dropped.
fn drain_logs(log: &SharedLog, stdout: &Capture, stderr: &Capture) -> (Vec<LogLine>, u64) {
    let (out, _) = stdout.take();
    let (err, _) = stderr.take();
    log.push_output("stdout", &out);
    log.push_output("stderr", &err);
    log.take()
}

/// The outcome of a call whose host code panicked.
fn host_panic(message: String, started: Instant) -> Outcome {
    Outcome {
        result: Err(ExecuteError::Trap {
            code: "host_panic",
            source: wasmtime::Error::msg(message),
        }),
        response_bytes: 0,
        logs: Vec::new(),
        dropped_log_lines: 0,
        duration: started.elapsed(),
        peak_memory_bytes: 0,
        fuel_consumed: None,
        egress_bytes_out: 0,
        egress_bytes_in: 0,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "host code panicked".into())
}

/// Aborts a spawned call when the future or body awaiting it is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a guest task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Instantiate,
    Call,
}

fn classify(
    stage: Stage,
    error: wasmtime::Error,
    memory_refused: bool,
    timeout_ms: u64,
) -> ExecuteError {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let code = match trap {
            Trap::Interrupt => return ExecuteError::Timeout(timeout_ms),
            Trap::StackOverflow => "stack_overflow",
            Trap::OutOfFuel => "out_of_fuel",
            Trap::UnreachableCodeReached if memory_refused => {
                return ExecuteError::OutOfMemory(error);
            }
            Trap::UnreachableCodeReached => "unreachable",
            _ => "trap",
        };
        return ExecuteError::Trap {
            code,
            source: error,
        };
    }
    if error.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() {
        return ExecuteError::Trap {
            code: "exit",
            source: error,
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return ExecuteError::PoolExhausted(error);
    }
    if memory_refused {
        return ExecuteError::OutOfMemory(error);
    }
    match stage {
        Stage::Instantiate => ExecuteError::Instantiate(error),
        // A host function refused the guest fatally (resource table full, header limit
        // exceeded, ...): the guest's doing, reported like a trap.
        Stage::Call => ExecuteError::Trap {
            code: "host_refused",
            source: error,
        },
    }
}
