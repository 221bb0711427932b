//! The event dispatcher: fires due schedules, claims due deliveries (events and schedule
//! firings) from the registry and delivers each as `POST {path}` to its extension, in this runner's runtime, with the same admission,
//! limits and bundle checks as a call over the execute hop.
//!
//! Any number of dispatchers (in runners, `palisade up` and `palisade dispatcher`) drain
//! one registry: a delivery is claimed by one of them under a lease (see
//! `palisade_registry::events`), so a dispatcher that dies mid-delivery leaves its lease to
//! run out and another one delivers. A 2xx answer ends the delivery; anything else, a
//! trap or a timeout, is tried again after an exponential backoff with jitter, until
//! [`DispatchConfig::max_attempts`]; then the delivery is dead. Each attempt is an
//! execution-log row with trigger `event` (or `schedule`), the event id and the attempt
//! number.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_protocol::trace::{self, TraceParent};
use palisade_registry::quota::UsageTally;
use palisade_registry::{AttemptEnd, ClaimedDelivery, DeliveryState, ExecutionRecord};
use palisade_runtime::{GrantSet, RequestBodyError, Started};
use rand::Rng;
use tracing::Instrument;

use crate::RunnerState;
use crate::error::RunnerError;
use crate::execute::{call_limits, invocation, permit, stats};

/// Headers the guest receives with an event (the gateway strips `x-palisade-*` from
/// callers, so a guest can trust them).
pub mod headers {
    /// The event's topic, e.g. `ticket.created`.
    pub const TOPIC: &str = "x-palisade-event-topic";
    /// The platform's id of the event (the `event_id` that publishing answered).
    pub const ID: &str = "x-palisade-event-id";
    /// The publisher's own id of the event.
    pub const KEY: &str = "x-palisade-event-key";
    /// Which attempt this is, from 1.
    pub const ATTEMPT: &str = "x-palisade-event-attempt";
    /// When the event was published (for a schedule's firing: its slot), RFC 3339 in UTC
    /// with milliseconds.
    pub const PUBLISHED_AT: &str = "x-palisade-event-published-at";
    /// `event` for a published event, `schedule` for a schedule's firing.
    pub const TRIGGER: &str = "x-palisade-trigger";
}

/// How a dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How long an idle dispatcher waits before looking for due deliveries again.
    pub poll_interval: Duration,
    /// Most deliveries claimed (and delivered concurrently) at once.
    pub batch: u32,
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// How long a claim holds a delivery. Must outlast the longest call (the operator's
    /// largest timeout), so that nobody else takes it while it runs.
    pub lease: Duration,
    /// Shortest time between two firings of one schedule, whatever it asks for.
    pub min_schedule_interval: Duration,
    /// How long an event is kept once none of its deliveries is pending (and so how long
    /// its publisher id answers as a duplicate). Dispatchers remove older ones.
    pub retention: Duration,
}

/// How often a dispatcher removes events past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Events removed per statement when pruning.
const PRUNE_BATCH: u32 = 1_000;

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            poll_interval: Duration::from_millis(500),
            batch: 16,
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(90),
            min_schedule_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl DispatchConfig {
    /// The wait after failed attempt number `attempt` (from 1): `backoff_base`
    /// doubled for each earlier attempt, at most `backoff_max`, then a random part of up
    /// to a half taken off (jitter), so that failures at one moment do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let full = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let jitter = rand::thread_rng().gen_range(0.0..0.5);
        full.mul_f64(1.0 - jitter)
    }
}

/// What a dispatcher has done since it started, for operators and the metrics export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// Failed attempts with another one to come.
    pub retried: u64,
    /// Failed attempts after which the delivery is dead.
    pub dead: u64,
    /// Attempts whose end could not be recorded (lease lost, or the registry failed).
    pub unrecorded: u64,
    /// First attempts made, over which the lag below is summed.
    pub first_attempts: u64,
    /// Sum of the lag of first attempts: from publishing (or the slot) to the claim, in ms.
    pub lag_ms_total: u64,
    /// The largest such lag, in ms.
    pub lag_ms_max: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    unrecorded: AtomicU64,
    first_attempts: AtomicU64,
    lag_ms_total: AtomicU64,
    lag_ms_max: AtomicU64,
}

/// A dispatcher over one runner's state.
pub struct Dispatcher {
    state: Arc<RunnerState>,
    config: DispatchConfig,
    /// This dispatcher's name in leases.
    owner: String,
    counters: Counters,
}

impl Dispatcher {
    /// A dispatcher delivering through `state`'s runtime.
    pub fn new(state: Arc<RunnerState>, config: DispatchConfig) -> Self {
        Dispatcher {
            state,
            config,
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4()),
            counters: Counters::default(),
        }
    }

    /// What this dispatcher has done so far.
    pub fn stats(&self) -> DispatchStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DispatchStats {
            attempts: get(&c.attempts),
            delivered: get(&c.delivered),
            retried: get(&c.retried),
            dead: get(&c.dead),
            unrecorded: get(&c.unrecorded),
            first_attempts: get(&c.first_attempts),
            lag_ms_total: get(&c.lag_ms_total),
            lag_ms_max: get(&c.lag_ms_max),
        }
    }

    /// Delivers until `shutdown` completes; a round in progress is finished first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(owner = %self.owner, "event dispatcher started");
        tokio::pin!(shutdown);
        let mut next_prune = Instant::now();
        loop {
            if Instant::now() >= next_prune {
                self.prune().await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let delivered = self.run_once().await;
            if delivered >= self.config.batch as usize {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!(owner = %self.owner, "event dispatcher stopped");
    }

    /// Removes the events published longer than the retention ago whose deliveries have all
    /// ended, in batches; returns how many went. A failure is logged and left for the next
    /// time.
    pub async fn prune(&self) -> u64 {
        let mut removed = 0;
        loop {
            match self
                .state
                .registry
                .prune_events(self.config.retention, PRUNE_BATCH)
                .await
            {
                Ok(count) => {
                    removed += count;
                    if count < u64::from(PRUNE_BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "removing events past their retention failed");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "events past their retention removed");
        }
        removed
    }

    /// One round: fires due schedules, then claims up to a batch of due deliveries and
    /// delivers them concurrently. Returns how many it claimed.
    pub async fn run_once(&self) -> usize {
        let min_interval =
            i64::try_from(self.config.min_schedule_interval.as_millis()).unwrap_or(i64::MAX);
        if let Err(error) = self
            .state
            .registry
            .fire_schedules(min_interval, self.config.batch)
            .await
        {
            tracing::warn!(%error, "firing schedules failed");
        }
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let claimed = match self
            .state
            .registry
            .claim_deliveries(&self.owner, lease_ms, self.config.batch)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "claiming event deliveries failed");
                return 0;
            }
        };
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|claim| {
            // Each attempt is a trace of its own, rooted here.
            let span = tracing::info_span!(
                "event_delivery",
                delivery_id = %claim.id,
                event_id = %claim.event_id,
                attempt = claim.attempt,
                tenant = %claim.tenant_id,
                extension = %claim.extension_id,
                trace_id = tracing::field::Empty,
            );
            let trace = trace::join(&span, None);
            span.record("trace_id", trace.trace_id().as_str());
            self.deliver(claim, trace).instrument(span)
        }))
        .await;
        count
    }

    /// Makes one attempt and records it: the execution-log row, then the delivery's end.
    async fn deliver(&self, claim: ClaimedDelivery, trace: TraceParent) {
        let started = Instant::now();
        let counters = &self.counters;
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        if claim.attempt == 1 {
            let lag = u64::try_from(claim.claimed_at_ms.saturating_sub(claim.published_at_ms))
                .unwrap_or(0);
            counters.first_attempts.fetch_add(1, Ordering::Relaxed);
            counters.lag_ms_total.fetch_add(lag, Ordering::Relaxed);
            counters.lag_ms_max.fetch_max(lag, Ordering::Relaxed);
            self.state.metrics.delivery_lag(Duration::from_millis(lag));
        }
        let mut row = ExecutionRecord::new(
            uuid::Uuid::now_v7().to_string(),
            claim.tenant_id.as_str(),
            claim.extension_id.as_str(),
            claim.trigger.as_str(),
        );
        row.install_id = Some(claim.install_id.clone());
        row.method = Method::POST.to_string();
        row.path = claim.path.clone();
        row.event_id = Some(claim.event_id.clone());
        row.attempt = Some(claim.attempt);
        row.trace_id = Some(trace.trace_id());

        let result = self.attempt(&claim, &mut row, trace).await;
        row.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let end = match result {
            Ok(status) if status.is_success() => AttemptEnd::Delivered {
                status: status.as_u16(),
            },
            Ok(status) => self.failed(&claim, Some(status.as_u16()), format!("answered {status}")),
            Err(error) => {
                let code = error.code();
                row.outcome = code.outcome().to_owned();
                row.error_code = Some(code.as_str().to_owned());
                tracing::warn!(
                    delivery_id = %claim.id,
                    event_id = %claim.event_id,
                    attempt = claim.attempt,
                    %error,
                    "event delivery failed"
                );
                self.failed(&claim, None, code.as_str().to_owned())
            }
        };
        let usage = UsageTally::of_executions(std::slice::from_ref(&row));
        if let Err(error) = self
            .state
            .registry
            .record_execution_batch(std::slice::from_ref(&row), &usage)
            .await
        {
            tracing::warn!(%error, request_id = %row.request_id, "execution-log row lost");
        }
        let recorded = self.state.registry.finish_attempt(&claim, &end).await;
        let (counter, result) = match &recorded {
            Ok(Some(DeliveryState::Delivered)) => (&counters.delivered, "delivered"),
            Ok(Some(DeliveryState::Pending)) => (&counters.retried, "retried"),
            Ok(Some(DeliveryState::Dead)) => (&counters.dead, "dead"),
            Ok(None) | Err(_) => (&counters.unrecorded, "unrecorded"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.state.metrics.delivery_attempt(result);
        match recorded {
            Ok(Some(DeliveryState::Dead)) => tracing::warn!(
                delivery_id = %claim.id,
                event_id = %claim.event_id,
                attempts = claim.attempt,
                "event delivery is dead"
            ),
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                delivery_id = %claim.id,
                "event delivery lease lost before the attempt ended; its result is not recorded"
            ),
            Err(error) => tracing::warn!(
                delivery_id = %claim.id,
                %error,
                "recording an event delivery attempt failed; it is tried again when its lease runs out"
            ),
        }
    }

    /// The end of a failed attempt: another one after the backoff, or dead.
    fn failed(&self, claim: &ClaimedDelivery, status: Option<u16>, error: String) -> AttemptEnd {
        let retry_after =
            (claim.attempt < self.config.max_attempts).then(|| self.config.backoff(claim.attempt));
        AttemptEnd::Failed {
            status,
            error,
            retry_after,
        }
    }

    /// Runs the delivery's call; the guest's status, or why there is none. Fills in the
    /// row's install details, status and consumption.
    async fn attempt(
        &self,
        claim: &ClaimedDelivery,
        row: &mut ExecutionRecord,
        trace: TraceParent,
    ) -> Result<StatusCode, RunnerError> {
        let state = &self.state;
        let install = state
            .installs
            .get(&state.registry, &claim.install_id, |_| true)
            .await?
            .filter(|install| install.tenant_id == claim.tenant_id)
            .ok_or_else(|| RunnerError::UnknownInstall(claim.install_id.clone()))?;
        row.version_id = Some(install.version_id.clone());
        row.content_hash = Some(install.content_hash.to_string());
        let _permit = permit(state, &install)?;
        let prepared = state
            .prepared(&install.content_hash, GrantSet::of(&install.grants))
            .await?;
        let limits = call_limits(state, &install, None);
        let request = event_request(claim)?;
        let started = state
            .runtime
            .execute(
                &prepared,
                invocation(
                    row.request_id.clone(),
                    &install,
                    claim.trigger.as_str(),
                    None,
                    Some(trace),
                ),
                request,
                limits,
            )
            .await;
        let collected = Started::collect(started).await;
        let trigger = claim.trigger.as_str();
        state
            .metrics
            .observe_call(&install, trigger, &collected.outcome);
        let stats = stats(&collected.outcome);
        row.fuel_consumed = stats.fuel_consumed;
        row.peak_memory_bytes = Some(stats.peak_memory_bytes);
        row.egress_bytes = stats.egress_bytes;
        row.response_bytes = Some(stats.response_bytes);
        row.log_excerpt = (!stats.log_excerpt.is_empty()).then_some(stats.log_excerpt);
        row.status = collected.status.map(|s| s.as_u16());
        collected.outcome.result?;
        collected.status.ok_or(RunnerError::FailedWithoutError)
    }
}

/// The guest's request for `claim`: `POST {path}`, the payload as a JSON body, and the
/// event's headers.
fn event_request(
    claim: &ClaimedDelivery,
) -> Result<
    http::Request<impl http_body::Body<Data = Bytes, Error = RequestBodyError> + Send + 'static>,
    RunnerError,
> {
    let header = |value: String| {
        HeaderValue::try_from(value).map_err(|_| RunnerError::NotACall(claim.path.clone()))
    };
    let body =
        Full::new(Bytes::from(claim.payload.clone())).map_err(|never: Infallible| match never {});
    http::Request::builder()
        .method(Method::POST)
        .uri(claim.path.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(headers::TOPIC, header(claim.topic.clone())?)
        .header(headers::ID, header(claim.event_id.clone())?)
        .header(headers::KEY, header(claim.event_key.clone())?)
        .header(headers::ATTEMPT, claim.attempt)
        .header(
            headers::PUBLISHED_AT,
            header(rfc3339_millis(claim.published_at_ms))?,
        )
        .header(headers::TRIGGER, claim.trigger.as_str())
        .body(body)
        .map_err(|_| RunnerError::NotACall(claim.path.clone()))
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds.
fn rfc3339_millis(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_at_most_half_taken_off() {
        let config = DispatchConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..DispatchConfig::default()
        };
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10)] {
            for _ in 0..20 {
                let wait = config.backoff(attempt);
                let full = Duration::from_secs(full);
                assert!(wait <= full && wait > full / 2, "{attempt}: {wait:?}");
            }
        }
    }

    #[test]
    fn publish_times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_765_000_000_123),
            "2025-12-06T05:46:40.123Z"
        );
    }
}
