//! Retrying transient failures (Redis I/O, registry or broker unreachable) with capped,
//! jittered exponential backoff (backon's policy) until they succeed, fail for good, or the
//! sink shuts down.
//!
//! A loop with an explicit [`Backoff`] rather than a retry combinator: the operations retried
//! here borrow the applier mutably, which closures handed to a combinator cannot do.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use mapping::one_line;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// First delay after a failure.
const MIN_DELAY: Duration = Duration::from_millis(100);
/// Delays double up to this.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The longest delay of a sink waiting for a service before it can start writing (at start,
/// or for its exclusive lease): [`Backoff::capped_at`].
pub(crate) const WAITING_TO_START_MAX_DELAY: Duration = Duration::from_secs(1);

/// The backoff policy: 100 ms doubling to 10 s, with jitter, forever.
fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// The delays between attempts of one operation.
#[derive(Debug)]
pub struct Backoff {
    /// Built at the first failure: most operations never fail.
    delays: Option<ExponentialBackoff>,
    attempts: u32,
    /// The longest delay.
    max_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::capped_at(MAX_DELAY)
    }
}

impl Backoff {
    /// Delays doubling up to `max_delay` instead of 10 s: for waits where noticing the end
    /// of an outage soon matters more than the attempts' cost (a sink waiting at start, or
    /// for its exclusive lease, did nothing else meanwhile; a supervisor would have started
    /// it again within a second or two).
    pub fn capped_at(max_delay: Duration) -> Backoff {
        Backoff {
            delays: None,
            attempts: 0,
            max_delay,
        }
    }

    /// Logs the failure of `what` and sleeps until the next attempt. Returns `false` when
    /// shutdown was requested instead (the caller gives up).
    pub async fn wait(
        &mut self,
        what: &str,
        error: &(dyn std::error::Error + Sync),
        shutdown: &CancellationToken,
    ) -> bool {
        self.attempts += 1;
        let delay = self
            .delays
            .get_or_insert_with(|| policy().with_max_delay(self.max_delay).build())
            .next()
            .unwrap_or(self.max_delay);
        warn!(
            error = %one_line(error),
            attempt = self.attempts,
            ?delay,
            "{what} failed; retrying."
        );
        tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("down")]
    struct Down;

    #[tokio::test(start_paused = true)]
    async fn delays_grow_and_are_capped() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::default();
        let start = tokio::time::Instant::now();
        for _ in 0..20 {
            assert!(backoff.wait("test", &Down, &shutdown).await);
        }
        let waited = start.elapsed();
        assert_eq!(backoff.attempts, 20);
        // At least the un-jittered sum of the first delays, at most 20 capped (jittered) delays.
        assert!(
            waited >= Duration::from_millis(100 + 200 + 400 + 800),
            "{waited:?}"
        );
        assert!(waited <= 2 * 20 * MAX_DELAY, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_wait() {
        let shutdown = CancellationToken::new();
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.wait("test", &Down, &shutdown).await;
        }
        let stop = shutdown.clone();
        tokio::spawn(async move { stop.cancel() });
        assert!(!backoff.wait("test", &Down, &shutdown).await);
    }
}
