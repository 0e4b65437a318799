//! Where the sink stands in each assigned partition: [`Progress`] holds the next offset to
//! apply per partition, updated by the apply stage after Redis succeeded and cleared by the
//! consumer context ([`SinkContext`]) when a partition is revoked. The caught-up check and a
//! rebuild's tracker read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{debug, info};

/// Next offset to apply, per `(topic, partition)`.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<Mutex<HashMap<(String, i32), i64>>>);

impl Progress {
    /// Records that everything before `next` was applied.
    pub fn applied(&self, topic: &str, partition: i32, next: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&(topic.to_owned(), partition)) {
            Some(current) => *current = (*current).max(next),
            None => {
                map.insert((topic.to_owned(), partition), next);
            }
        }
    }

    /// Forgets the partitions in `tpl` (revoked: another consumer may move them on).
    pub fn forget(&self, tpl: &TopicPartitionList) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for elem in tpl.elements() {
            map.remove(&(elem.topic().to_owned(), elem.partition()));
        }
    }

    /// The next offset to apply in `topic`/`partition`, if any work was applied there.
    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(topic.to_owned(), partition)).copied()
    }
}

/// The consumer type the sink uses.
pub(super) type SinkConsumer = StreamConsumer<SinkContext>;

/// The consumer context: logs rebalances and keeps [`Progress`] in step with the assignment.
#[derive(Debug, Default, Clone)]
pub struct SinkContext {
    /// Shared with the apply stage and the caught-up check.
    pub progress: Progress,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                info!(partitions = %describe(tpl), "Partitions revoked.");
                self.progress.forget(tpl);
            }
            Rebalance::Assign(tpl) => info!(partitions = %describe(tpl), "Partitions assigned."),
            Rebalance::Error(e) => info!(error = %e, "Rebalance failed."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(offsets = %describe(offsets), "Committed offsets."),
            // Nothing stored since the last commit: not worth a line.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => info!(error = %e, "Offset commit failed; it is retried with the next one."),
        }
    }
}

/// `topic/partition[@offset]` list for logs.
fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset().to_raw() {
            Some(o) if o >= 0 => format!("{}/{}@{o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward_and_forgets_revoked() {
        let p = Progress::default();
        p.applied("t", 0, 10);
        p.applied("t", 0, 4);
        assert_eq!(p.next("t", 0), Some(10));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        p.forget(&tpl);
        assert_eq!(p.next("t", 0), None);
    }
}
