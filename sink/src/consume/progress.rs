//! Where the sink stands in each assigned partition, and whether it has reached the end of
//! the log ("caught up", recorded as `caught_up_at_ms` in `sink:freshness:{mapping}`).
//!
//! [`Progress`] holds the next offset to apply per partition, updated by the apply stage
//! after Redis succeeded and cleared by the consumer context when a partition is revoked.
//! [`check`] compares it with the brokers' high watermarks: a partition without applied work
//! in this assignment stands at its committed offset (or its low watermark when the group has
//! none: `auto.offset.reset=earliest`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info};

use super::offsets::OffsetsClient;

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

/// Where one assigned partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to apply.
    pub next: i64,
    /// High watermark (offset of the next record to be written).
    pub high: i64,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Standing {
    /// Every assigned partition of a mapped topic.
    pub partitions: Vec<PartitionLag>,
}

impl Standing {
    /// Whether partitions are assigned and each is at its high watermark.
    pub fn caught_up(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.iter().all(|p| p.next >= p.high)
    }

    /// Records between the sink and the end of the log, over all partitions.
    pub fn lag(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.high - p.next).max(0))
            .sum()
    }

    /// The assigned topics whose every assigned partition is at its high watermark: their
    /// mappings are fresh even while other topics are still busy.
    pub fn caught_up_topics(&self) -> Vec<&str> {
        let mut topics = self.topics();
        topics.retain(|topic| {
            self.partitions
                .iter()
                .filter(|p| p.topic == *topic)
                .all(|p| p.next >= p.high)
        });
        topics
    }

    /// The distinct topics assigned.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.partitions.iter().map(|p| p.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// Compares [`Progress`] with the high watermarks of the `assignment`'s partitions of
/// `topics` (blocking: network round trips through `offsets`, each bounded by `timeout`).
pub fn check(
    assignment: &TopicPartitionList,
    offsets: &OffsetsClient,
    progress: &Progress,
    topics: &[String],
    timeout: Duration,
) -> KafkaResult<Standing> {
    let mut partitions = Vec::new();
    let mut unknown = TopicPartitionList::new();
    for elem in assignment.elements() {
        if !topics.iter().any(|t| t == elem.topic()) {
            continue;
        }
        let (low, high) = offsets.watermarks(elem.topic(), elem.partition(), timeout)?;
        let next = progress.next(elem.topic(), elem.partition());
        if next.is_none() {
            unknown.add_partition(elem.topic(), elem.partition());
        }
        partitions.push(PartitionLag {
            topic: elem.topic().to_owned(),
            partition: elem.partition(),
            next: next.unwrap_or(low),
            high,
        });
    }
    if unknown.count() > 0 {
        let committed = offsets.committed(unknown, timeout)?;
        for elem in committed.elements() {
            if let Offset::Offset(offset) = elem.offset() {
                if let Some(p) = partitions
                    .iter_mut()
                    .find(|p| p.partition == elem.partition() && p.topic == elem.topic())
                {
                    p.next = p.next.max(offset);
                }
            }
        }
    }
    Ok(Standing { partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(topic: &str, partition: i32, next: i64, high: i64) -> PartitionLag {
        PartitionLag {
            topic: topic.to_owned(),
            partition,
            next,
            high,
        }
    }

    #[test]
    fn caught_up_needs_every_partition_at_the_end() {
        assert!(!Standing::default().caught_up());
        let s = Standing {
            partitions: vec![lag("a", 0, 5, 5), lag("a", 1, 0, 0)],
        };
        assert!(s.caught_up());
        assert_eq!(s.lag(), 0);
        let s = Standing {
            partitions: vec![lag("a", 0, 5, 5), lag("b", 0, 3, 9)],
        };
        assert!(!s.caught_up());
        assert_eq!(s.lag(), 6);
        assert_eq!(s.topics(), vec!["a", "b"]);
        assert_eq!(s.caught_up_topics(), vec!["a"]);
        let s = Standing {
            partitions: vec![lag("a", 0, 5, 5), lag("a", 1, 2, 3)],
        };
        assert!(s.caught_up_topics().is_empty());
    }

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
