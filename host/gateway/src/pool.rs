//! The set of runners behind the gateway: which runner a call goes to (rendezvous hashing on
//! the content hash, so a version's compiled code stays warm on one runner), which runners
//! are skipped (active `/healthz` checks), and when a call moves on to the next runner
//! (only when it cannot have reached a guest, or when repeating it is harmless).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use palisade_protocol::ErrorCode;
use palisade_protocol::tls::ClientTls;
use tokio::task::AbortHandle;

use crate::runner::{ForwardError, HopRequest, RunnerClient, RunnerClientError, RunnerReply};

/// Upper bound on one health check's round trip.
pub const MAX_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One runner of the pool and what the health checks last saw.
#[derive(Debug)]
struct Member {
    client: RunnerClient,
    healthy: AtomicBool,
}

impl Member {
    fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!(runner = %self.client.base_url(), "runner is healthy again");
            } else {
                tracing::warn!(runner = %self.client.base_url(), "runner marked unhealthy");
            }
        }
    }
}

/// Several runners, health-checked, chosen per call by rendezvous hashing.
#[derive(Debug)]
pub struct RunnerPool {
    members: Vec<Arc<Member>>,
    checks: Vec<AbortHandle>,
}

impl Drop for RunnerPool {
    fn drop(&mut self) {
        for check in &self.checks {
            check.abort();
        }
    }
}

impl RunnerPool {
    /// A pool of the `http://` runners at `urls`: [`Self::with_tls`] without TLS.
    pub fn new(urls: &[String], health_interval: Duration) -> Result<Self, RunnerClientError> {
        Self::with_tls(urls, health_interval, None)
    }

    /// A pool of the runners at `urls`, `https://` ones spoken to with `tls`. When called
    /// inside a Tokio runtime, each runner's `/healthz` is checked every
    /// `health_interval`; a runner starts out healthy.
    pub fn with_tls(
        urls: &[String],
        health_interval: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Self, RunnerClientError> {
        if urls.is_empty() {
            return Err(RunnerClientError::NoRunners);
        }
        let members = urls
            .iter()
            .map(|url| {
                Ok(Arc::new(Member {
                    client: RunnerClient::new(url, tls)?,
                    healthy: AtomicBool::new(true),
                }))
            })
            .collect::<Result<Vec<_>, RunnerClientError>>()?;
        let checks = match tokio::runtime::Handle::try_current() {
            Ok(handle) if !health_interval.is_zero() => members
                .iter()
                .map(|member| {
                    handle
                        .spawn(health_loop(Arc::clone(member), health_interval))
                        .abort_handle()
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(RunnerPool { members, checks })
    }

    /// The runners' base URLs, in configuration order.
    pub fn urls(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.client.base_url()).collect()
    }

    /// Whether the runner at configuration index `index` passed its last health check.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.members
            .get(index)
            .is_some_and(|m| m.healthy.load(Ordering::Relaxed))
    }

    /// How many runners passed their last health check.
    pub fn healthy_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.healthy.load(Ordering::Relaxed))
            .count()
    }

    /// The order in which runners are tried for `key` (configuration indexes): healthy
    /// runners by descending rendezvous score, then unhealthy ones in the same order as a
    /// last resort (their state may be stale, and trying beats failing outright).
    pub fn order(&self, key: &str) -> Vec<usize> {
        let urls = self.urls();
        let mut order = rendezvous_order(&urls, key);
        order.sort_by_key(|&i| !self.is_healthy(i));
        order
    }

    /// Sends `request` to the runners in [`Self::order`] for `content_hash`, waiting at
    /// most `timeout` in all for an answer head. The call moves on to the next runner when
    /// it was not delivered (connection refused, or the runner answered 503 `unavailable`,
    /// which it does before running anything) and, for GET and HEAD only, when the exchange
    /// broke before an answer head arrived — in every case only while the caller's body can
    /// still be sent again. Anything else — a reply, a timeout, a broken exchange of
    /// another method — is final. Once a head has arrived nothing is repeated: the body
    /// streams to the caller.
    pub async fn execute(
        &self,
        content_hash: &str,
        request: &HopRequest,
        timeout: Duration,
    ) -> Result<RunnerReply, ForwardError> {
        let deadline = Instant::now() + timeout;
        let repeatable = is_repeatable(&request.method);
        let order = self.order(content_hash);
        let mut last = None;
        for (attempt, index) in order.iter().enumerate() {
            let member = &self.members[*index];
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            if attempt > 0 {
                tracing::info!(runner = %member.client.base_url(), attempt, "failing over to the next runner");
            }
            let result = member.client.execute(request, remaining).await;
            match &result {
                Ok(reply) if !refused_before_running(reply) => return result,
                Ok(_) => {}
                Err(ForwardError::Unreachable { .. }) => member.set_healthy(false),
                Err(ForwardError::Transport { .. }) if repeatable => member.set_healthy(false),
                // The body went with an earlier attempt: that attempt's failure stands.
                Err(ForwardError::BodyConsumed) => break,
                Err(_) => return result,
            }
            last = Some(result);
        }
        last.unwrap_or_else(|| {
            Err(ForwardError::Timeout {
                url: self.urls().join(", "),
                timeout,
            })
        })
    }
}

/// Whether a runner's reply says the call was turned away before anything ran: 503
/// `unavailable` (draining, or no capacity to start an instance).
fn refused_before_running(reply: &RunnerReply) -> bool {
    matches!(
        reply,
        RunnerReply::Platform {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unavailable,
            ..
        }
    )
}

/// Whether a call with `method` may be sent again after it reached a runner.
fn is_repeatable(method: &http::Method) -> bool {
    *method == http::Method::GET || *method == http::Method::HEAD
}

async fn health_loop(member: Arc<Member>, interval: Duration) {
    let timeout = interval.min(MAX_HEALTH_TIMEOUT);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let healthy = member.client.check_health(timeout).await;
        member.set_healthy(healthy);
    }
}

/// Indexes of `urls` by descending rendezvous (highest-random-weight) score for `key`;
/// ties, which need a 64-bit collision, go to the lower index.
pub fn rendezvous_order(urls: &[&str], key: &str) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| (score(url, key), i))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The rendezvous weight of `runner` for `key`: FNV-1a over both (separated by a byte
/// that appears in neither a URL nor a hash), finished with the SplitMix64 mixer so that
/// nearby inputs spread evenly. Stable across processes and releases.
fn score(runner: &str, key: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in runner.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests;
