//! Where the sink stands in each assigned partition: [`Progress`] holds the next offset to
//! apply per partition, set by the consumer context ([`SinkContext`]) to where an assigned
//! partition starts, moved on by the apply stage after Redis succeeded, and cleared when a
//! partition is revoked. The caught-up check and a rebuild's tracker read it.
//!
//! The context also decides where each assigned partition starts: it asks Redis
//! (`self_heal.rs`) in the rebalance callback and hands librdkafka the assignment with those
//! offsets, the way librdkafka expects start offsets to be set (a seek right after `assign`
//! races with the fetcher starting).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::fencing::Assignments;
use super::self_heal::{PartitionStart, SelfHeal};
use crate::telemetry;

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

    /// Records that `topic`/`partition` starts at `next` (assigned): everything before it is
    /// applied, and nothing after it, whatever the group committed.
    pub fn start(&self, topic: &str, partition: i32, next: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert((topic.to_owned(), partition), next);
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

/// The consumer context: starts each assigned partition where Redis says (`self_heal.rs`),
/// logs rebalances and keeps [`Progress`] in step with the assignment.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// Shared with the apply stage and the caught-up check.
    pub progress: Progress,
    /// Where assigned partitions start, and whether Redis keeps what it acknowledged.
    pub(super) heal: Arc<SelfHeal>,
    /// The fence of each assigned partition, for the batches read under its assignment.
    pub(super) assignments: Assignments,
}

impl SinkContext {
    /// A context asking `heal` where assigned partitions start.
    pub(super) fn new(heal: Arc<SelfHeal>) -> SinkContext {
        SinkContext {
            progress: Progress::default(),
            heal,
            assignments: Assignments::default(),
        }
    }

    /// Sets the start of every partition of `tpl` from Redis, records the fence of the
    /// assignment, and logs the assignment in one line, naming the partitions moved back.
    fn place(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let placement = self.heal.place(consumer, tpl);
        self.assignments
            .assigned(tpl, placement.as_ref().ok().map(|p| p.marker.as_str()));
        let starts = match placement {
            Ok(placement) => placement.starts,
            Err(e) => {
                warn!(
                    partitions = %describe(tpl),
                    error = %e,
                    "Partitions assigned; resuming from the committed offsets until redis can be asked."
                );
                return;
            }
        };
        for s in &starts {
            if let Err(e) = tpl.set_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))
            {
                warn!(topic = %s.topic, partition = s.partition, error = %e, "Cannot set a start offset.");
            }
            self.progress.start(&s.topic, s.partition, s.start);
        }
        let rewound: Vec<&PartitionStart> = starts.iter().filter(|s| s.rewound()).collect();
        if rewound.is_empty() {
            info!(partitions = %describe(tpl), "Partitions assigned.");
            return;
        }
        // The group's committed offsets now say what Redis says: other sinks of the group
        // count them as applied (the watermark), and so does a restart before the next commit.
        let mut committed = TopicPartitionList::new();
        for s in &rewound {
            metrics::counter!(telemetry::OFFSET_RESETS, "topic" => s.topic.clone()).increment(1);
            if let Err(e) =
                committed.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))
            {
                warn!(topic = %s.topic, partition = s.partition, error = %e, "Cannot commit a start offset.");
            }
        }
        if let Err(e) = consumer.commit(&committed, CommitMode::Async) {
            warn!(error = %e, "Committing the start offsets failed; the next commit corrects them.");
        }
        let moved = rewound
            .iter()
            .map(|s| format!("{}/{} {}->{}", s.topic, s.partition, s.committed, s.start))
            .collect::<Vec<_>>()
            .join(",");
        warn!(
            partitions = %describe(tpl),
            %moved,
            "Partitions assigned; redis holds less than the group committed, so these resume from what redis holds."
        );
    }
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    /// Replaces the default only to set the start offsets in the assignment before it is
    /// applied; assigns and unassigns as the default does.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.place(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            other => {
                if other == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    info!(partitions = %describe(tpl), "Partitions revoked.");
                } else {
                    let code: rdkafka::types::RDKafkaErrorCode = other.into();
                    info!(error = %code, "Rebalance failed.");
                }
                self.progress.forget(tpl);
                self.heal.forget(tpl);
                self.assignments.revoked(tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "Applying the rebalance failed.");
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
