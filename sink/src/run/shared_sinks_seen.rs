//! When an `auto` sink last saw another sink announce itself as a shared writer of its
//! mappings, across the pipelines of one process.
//!
//! Announcements vanish without their sinks: Redis loses its data (a flush, an empty
//! restart) or comes back after an outage longer than their lease, and the shared sinks
//! still running announce themselves again within a third of their lease time. While one
//! pipeline runs, [`super::appliers::Appliers::choose_again`] outwaits such a gap. But the
//! applier is also chosen anew when a loss starts the pipeline again, or when the drain of a
//! lease given up to a shared sink ends, and the announcements may be gone at that moment:
//! taken for a fresh start, that choice would take the exclusive lease and shut the shared
//! sinks out until the lease is given back to them. Shared sinks seen less than the same
//! wait ago are therefore taken to be still there.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The last time another sink's announcement was seen, shared with the watches that read
/// the announcements while a pipeline runs.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedSinksSeen(Arc<Mutex<Option<Instant>>>);

impl SharedSinksSeen {
    /// Another sink's announcement was seen just now.
    pub fn now(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether another sink's announcement was seen less than `wait` ago.
    pub fn within(&self, wait: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|seen| seen.elapsed() < wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shared_sinks_count_as_there_for_the_wait_after_they_were_last_seen() {
        let seen = SharedSinksSeen::default();
        let wait = Duration::from_secs(18);
        assert!(!seen.within(wait), "never seen");
        seen.clone().now();
        tokio::time::advance(Duration::from_secs(17)).await;
        assert!(seen.within(wait));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!seen.within(wait), "gone after the wait");
        seen.now();
        assert!(seen.within(wait), "seen again");
    }
}
