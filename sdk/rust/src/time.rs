//! Waiting without spinning, for pacing a streaming response or retrying.
//!
//! Uses `wasi:clocks/monotonic-clock`, which every component may import; no manifest
//! capability is needed.

use std::time::Duration;

#[cfg(not(palisade_fake_host))]
use crate::bindings::handler::wasi::clocks::monotonic_clock;

/// Blocks the invocation for `duration` on the host's monotonic clock
/// (`subscribe-duration`, then `block` on the pollable): the instance waits without
/// using CPU. The time still counts towards the manifest's `limits.timeout_ms`.
///
/// A zero duration returns at once without calling the host, so code that sleeps for a
/// configurable interval can be tested natively with an interval of zero; any other
/// duration panics outside the runner, like every host function.
///
/// ```no_run
/// use std::time::Duration;
/// use palisade_sdk::http::Response;
///
/// let response = Response::stream(200, |writer| {
///     for n in 1..=3 {
///         palisade_sdk::time::sleep(Duration::from_millis(250));
///         writeln!(writer, "tick {n}")?;
///     }
///     Ok(())
/// });
/// ```
pub fn sleep(duration: Duration) {
    if duration.is_zero() {
        return;
    }
    #[cfg(palisade_fake_host)]
    {
        // Under a test host the clock moves on at once: a test never waits.
        if crate::testing::try_with_state(|state| {
            state.clock = state.clock.saturating_add(duration)
        })
        .is_none()
        {
            std::thread::sleep(duration);
        }
    }
    #[cfg(not(palisade_fake_host))]
    {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        monotonic_clock::subscribe_duration(nanos).block();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sleep_does_not_call_the_host() {
        sleep(Duration::ZERO);
    }
}
