//! Records handed to the apply stage and not yet applied: the consume stage's measure of
//! whether Redis is busy, for adaptive batching ("Nagle off, pipeline depth N").
//!
//! While nothing is in flight, a waiting batch goes to the apply stage as soon as no further
//! record is already at hand: a lone change is not held back for company. While Redis is
//! busy, records gather into the next batch until it is full, Redis becomes idle, or
//! `batch.linger_ms` has passed, whichever comes first. Full batches still go at once (up to
//! the apply queue's bound), so peak throughput is what it was.

use tokio::sync::watch;

/// Counts the records between hand-over and applied; cloned into every lane.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    records: watch::Sender<usize>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            records: watch::Sender::new(0),
        }
    }
}

impl InFlight {
    /// `records` records were handed to the apply stage.
    pub(super) fn handed_over(&self, records: usize) {
        self.records.send_modify(|n| *n += records);
    }

    /// `records` records were applied (their offsets stored), or given up at shutdown.
    pub(super) fn applied(&self, records: usize) {
        self.records.send_modify(|n| *n = n.saturating_sub(records));
    }

    /// A watch of the count, for [`wait_idle`].
    pub(super) fn subscribe(&self) -> watch::Receiver<usize> {
        self.records.subscribe()
    }
}

/// Resolves once nothing is in flight (at once when nothing is); never when the counter is
/// gone (the pipeline is stopping).
pub(super) async fn wait_idle(records: &mut watch::Receiver<usize>) {
    if records.wait_for(|n| *n == 0).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn idle_at_once_when_nothing_is_in_flight() {
        let in_flight = InFlight::default();
        let mut watch = in_flight.subscribe();
        assert!(wait_idle(&mut watch).now_or_never().is_some());
    }

    #[tokio::test]
    async fn busy_until_every_record_handed_over_is_applied() {
        let in_flight = InFlight::default();
        let mut watch = in_flight.subscribe();
        in_flight.handed_over(3);
        assert!(wait_idle(&mut watch).now_or_never().is_none());
        in_flight.applied(2);
        assert!(wait_idle(&mut watch).now_or_never().is_none());
        in_flight.applied(1);
        assert!(wait_idle(&mut watch).now_or_never().is_some());
    }
}
