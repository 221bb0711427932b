//! One call: a fresh store and instance, the request handed to the guest's
//! `wasi:http/incoming-handler`, the response collected under the call's limits.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use palisade_bundle::manifest::Capabilities;

use crate::capability::CallCapabilities;
use crate::capability::context::ContextState;
use crate::capability::http::EgressHooks;
use crate::capability::log::{LogBounds, LogLine, LogState, OperatorSink, SharedLog};
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
    /// What started the call (`http`).
    pub trigger: String,
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

/// The guest's HTTP response.
#[derive(Debug, Clone)]
pub struct GuestResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case, in the guest's order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
}

/// What a call produced, with what the execution log records about it.
#[derive(Debug)]
pub struct Outcome {
    /// The guest's response, or why there is none.
    pub result: Result<GuestResponse, ExecuteError>,
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
    /// Runs `request` through a fresh instance of `prepared`.
    ///
    /// With `inline_calls` (the default) the call starts on the caller's task, which costs
    /// no thread hand-off; if its guest code is still running at an epoch tick, the rest of
    /// the call moves to the guest threads, so that a long-running guest never holds a
    /// thread that serves requests. Without it, every call runs on the guest threads.
    pub async fn execute(
        &self,
        prepared: &Prepared,
        invocation: Invocation,
        request: http::Request<Bytes>,
        limits: CallLimits,
    ) -> Outcome {
        let started = Instant::now();
        let ticked = Arc::new(AtomicBool::new(false));
        let runtime = self.clone();
        let prepared = prepared.clone();
        let flag = Arc::clone(&ticked);
        let call = async move {
            runtime
                .run_call(&prepared, invocation, request, limits, flag)
                .await
        };
        // A panic in host code ends this call alone, reported like a trap.
        let mut call: Pin<Box<dyn Future<Output = Outcome> + Send>> = Box::pin(async move {
            AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| host_panic(panic_message(&*panic), started))
        });
        let executor = self.executor.handle();
        if self.config.inline_calls || executor.is_none() {
            let inline = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
                Poll::Pending if executor.is_some() && ticked.load(Ordering::Relaxed) => {
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
            if let Some(outcome) = inline {
                return outcome;
            }
        }
        let Some(executor) = executor else {
            return host_panic("no guest executor".into(), started);
        };
        let call = executor.spawn(call);
        // Dropping this future (the caller went away) ends the call and its instance.
        let _guard = AbortOnDrop(call.abort_handle());
        match call.await {
            Ok(outcome) => outcome,
            Err(join) => host_panic(join.to_string(), started),
        }
    }

    /// One call, on the current task: the guest and the collection of its response are
    /// polled together.
    async fn run_call(
        &self,
        prepared: &Prepared,
        invocation: Invocation,
        request: http::Request<Bytes>,
        limits: CallLimits,
        ticked: Arc<AtomicBool>,
    ) -> Outcome {
        let started = Instant::now();
        let span = tracing::info_span!(
            "invocation",
            request_id = %invocation.request_id,
            tenant = %invocation.tenant_id,
            extension = %invocation.extension_id,
            version = %invocation.version,
            content_hash = %invocation.content_hash,
        );
        let timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
        let config = invocation.config.clone();
        let invocation_for_caps = invocation.clone();
        let hooks = EgressHooks::for_call(
            &self.config.egress,
            &invocation.grants,
            started + limits.timeout,
        );
        let egress = hooks.counters();
        let log = SharedLog::new(LogState::prepare(
            LogBounds {
                max_lines: self.config.max_log_lines,
                max_bytes: self.config.max_log_bytes,
                max_message_bytes: self.config.max_log_message_bytes,
            },
            OperatorSink {
                span: span.clone(),
                limiter: &self.operator_log,
                install_id: &invocation_for_caps.install_id,
            },
        ));
        let state = InstanceState::new(
            &self.config,
            ContextState::prepare(invocation, config),
            log.clone(),
            self.call_capabilities(&invocation_for_caps),
            MemoryLimiter::new(limits.memory_bytes),
            hooks,
        );
        // Kept apart from the store, so that a call cut off while its instance is inside a
        // host call still reports what it logged.
        let (stdout, stderr) = (state.stdout.clone(), state.stderr.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let tick = self.config.epoch_tick_ms.max(1);
        // Every epoch tick, running guest code yields (and, when it started inline, moves to
        // the guest threads) so a spinning guest never holds a serving thread; once the
        // call's deadline has passed, it traps.
        let guest_deadline = started + limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= guest_deadline {
                Err(Trap::Interrupt.into())
            } else {
                ticked.store(true, Ordering::Relaxed);
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let fuel_granted = if self.config.fuel {
            let fuel = limits.fuel.unwrap_or(self.config.fuel_per_call);
            // Fuel is enabled in the engine, so setting it cannot fail.
            let _ = store.set_fuel(fuel);
            Some(fuel)
        } else {
            None
        };

        let (tx, rx) = tokio::sync::oneshot::channel();
        let setup = (|| {
            let request = to_incoming(request, GUEST_AUTHORITY)?;
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let out = store.data_mut().http().new_response_outparam(tx)?;
            wasmtime::Result::Ok((req, out))
        })();
        let (req, out) = match setup {
            Ok(pair) => pair,
            Err(e) => {
                return finish(
                    store,
                    Err(ExecuteError::Instantiate(e)),
                    started,
                    fuel_granted,
                );
            }
        };

        let pre = prepared.pre.clone();
        // The guest runs inside this task, polled together with the collection of its
        // response: no hand-off between threads during the call.
        let guest = async move {
            let result = match pre.instantiate_async(&mut store).await {
                Ok(proxy) => proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
                    .map_err(|e| (Stage::Call, e)),
                Err(e) => Err((Stage::Instantiate, e)),
            };
            (result, store)
        };
        let mut guest = std::pin::pin!(guest);

        // The epoch deadline traps guest code; this later bound also covers host calls
        // that block and guests that never finish their body.
        let grace = Duration::from_millis(tick * 3 + 50);
        let deadline = tokio::time::Instant::now() + limits.timeout + grace;
        let max_response = limits
            .max_response_bytes
            .min(self.config.max_response_bytes);
        let timed_out = |started: Instant| {
            let (logs, dropped_log_lines) = drain_logs(&log, &stdout, &stderr);
            Outcome {
                result: Err(ExecuteError::Timeout(timeout_ms)),
                logs,
                dropped_log_lines,
                duration: started.elapsed(),
                peak_memory_bytes: 0,
                fuel_consumed: None,
                egress_bytes_out: egress.bytes_out(),
                egress_bytes_in: egress.bytes_in(),
            }
        };
        let expired = tokio::time::sleep_until(deadline);
        let mut expired = std::pin::pin!(expired);

        // 1. Run the guest until it sets the response head, or ends without one.
        // (Returning early drops the guest future, which ends the instance.)
        let mut rx = rx;
        let (head, mut returned) = tokio::select! {
            biased;
            head = &mut rx => (head.ok(), None),
            joined = &mut guest => (rx.try_recv().ok(), Some(joined)),
            () = &mut expired => return timed_out(started),
        };

        // 2. Collect the body while the guest goes on writing it.
        let response = match head {
            Some(Ok(resp)) => {
                let body = collect(resp, max_response);
                let mut body = std::pin::pin!(body);
                loop {
                    tokio::select! {
                        biased;
                        response = &mut body => break response,
                        joined = &mut guest, if returned.is_none() => returned = Some(joined),
                        () = &mut expired => return timed_out(started),
                    }
                }
            }
            Some(Err(code)) => Err(ExecuteError::NoResponse(format!(
                "guest set an error response: {code:?}"
            ))),
            None => Err(ExecuteError::NoResponse(
                "guest returned without setting a response".into(),
            )),
        };

        // A body past the cap ends the call at once: the guest's later fate changes nothing.
        if let Err(ExecuteError::ResponseTooLarge(_)) = response {
            return Outcome {
                result: response,
                ..timed_out(started)
            };
        }

        // 3. Let the guest return; its trap, if any, explains a failed response.
        let (guest_result, store) = match returned {
            Some(joined) => joined,
            None => tokio::select! {
                biased;
                joined = &mut guest => joined,
                () = &mut expired => return timed_out(started),
            },
        };
        let result = match guest_result {
            Err((stage, e)) => Err(classify(
                stage,
                e,
                store.data().limiter.refused(),
                timeout_ms,
            )),
            Ok(()) => response,
        };
        finish(store, result, started, fuel_granted)
    }
}

/// Reads the guest's response body, refusing more than `max` bytes.
async fn collect(
    response: http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
    max: usize,
) -> Result<GuestResponse, ExecuteError> {
    let (parts, body) = response.into_parts();
    let body = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ExecuteError::ResponseTooLarge(max));
        }
        Err(e) => return Err(ExecuteError::NoResponse(format!("body failed: {e}"))),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(GuestResponse {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}

impl Runtime {
    /// Prepares the per-call state of every granted capability that keeps one.
    fn call_capabilities(&self, invocation: &Invocation) -> CallCapabilities {
        CallCapabilities {
            metrics: invocation.grants.metrics.then(|| {
                crate::capability::metrics::MetricsState::prepare(
                    self.metrics
                        .install(&invocation.tenant_id, &invocation.extension_id),
                )
            }),
            secrets: crate::capability::secrets::SecretsState::prepare(
                self.services.secrets.clone(),
                invocation,
            ),
            storage: crate::capability::storage::StorageState::prepare(
                self.services.storage.clone(),
                invocation,
            ),
        }
    }
}

fn to_incoming(
    request: http::Request<Bytes>,
    authority: &str,
) -> wasmtime::Result<
    http::Request<http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>>,
> {
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
    let body = Full::new(body)
        .map_err(wasmtime_wasi_http::Error::from)
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

fn finish(
    store: Store<InstanceState>,
    result: Result<GuestResponse, ExecuteError>,
    started: Instant,
    fuel_granted: Option<u64>,
) -> Outcome {
    let fuel_consumed =
        fuel_granted.and_then(|g| store.get_fuel().ok().map(|left| g - left.min(g)));
    let data = store.data();
    let peak = data.limiter.peak() as u64;
    let egress = data.hooks.counters();
    let (logs, dropped_log_lines) = drain_logs(&data.log, &data.stdout, &data.stderr);
    Outcome {
        result,
        logs,
        dropped_log_lines,
        duration: started.elapsed(),
        peak_memory_bytes: peak,
        fuel_consumed,
        egress_bytes_out: egress.bytes_out(),
        egress_bytes_in: egress.bytes_in(),
    }
}

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

/// Aborts a spawned call when the future awaiting it is dropped.
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
