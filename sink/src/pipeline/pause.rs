//! Pausing the assigned partitions, for the consume stage, which alone calls it (so that
//! pausing and resuming never race): while Redis is full ([`crate::memory::MemoryGuard`]),
//! and while the apply stage has not taken a full batch for [`BACKLOG_PAUSE_AFTER`] (Redis
//! unreachable or slow). In both cases the consume stage keeps polling the consumer, which
//! keeps it in the group (`max.poll.interval.ms`), but receives nothing from the paused
//! partitions.
//!
//! librdkafka keeps a partition's pause across a rebalance that revokes and assigns it again,
//! and does not pause a partition assigned after the call: so resuming covers every
//! partition paused since the last resume, and a record that arrives while paused (from a
//! newly assigned partition) makes the stage pause the whole assignment again. Why nothing is
//! lost or repeated: see the pipeline's documentation, "Why delivery is at least once".

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tracing::{debug, warn};

use super::progress::SinkConsumer;

/// How long a full batch may wait for the apply stage before the partitions are paused:
/// long enough that a busy Redis never causes a pause (a batch takes milliseconds), far
/// below any `max.poll.interval.ms` librdkafka accepts (at least `session.timeout.ms`).
pub(super) const BACKLOG_PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Why the partitions are paused, and which ones were.
#[derive(Debug, Default)]
pub(super) struct Pauses {
    /// Redis is full.
    memory: bool,
    /// The apply stage is not taking batches.
    backlog: bool,
    /// Whether the consumer's partitions are paused now.
    paused: bool,
    /// Every partition paused since the last resume (some may have been revoked since).
    touched: BTreeSet<(String, i32)>,
}

impl Pauses {
    /// Whether the partitions are paused.
    pub(super) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the backlog pause is on.
    pub(super) fn backlog(&self) -> bool {
        self.backlog
    }

    /// Redis is full, or has room again.
    pub(super) fn set_memory(&mut self, consumer: &SinkConsumer, full: bool) {
        self.memory = full;
        self.apply(consumer);
    }

    /// The apply stage stopped taking batches, or took the one that waited.
    pub(super) fn set_backlog(&mut self, consumer: &SinkConsumer, behind: bool) {
        if behind && !self.backlog {
            debug!(
                after = ?BACKLOG_PAUSE_AFTER,
                "The apply stage is not taking batches; pausing the partitions meanwhile."
            );
        }
        self.backlog = behind;
        self.apply(consumer);
    }

    /// A record arrived although the partitions are paused: its partition was assigned
    /// since. Pauses the whole assignment again (the record itself is kept).
    pub(super) fn arrived_while_paused(&mut self, consumer: &SinkConsumer) {
        self.pause(consumer);
    }

    fn apply(&mut self, consumer: &SinkConsumer) {
        let pause = self.memory || self.backlog;
        if pause && !self.paused {
            self.pause(consumer);
        } else if !pause && self.paused {
            self.resume(consumer);
        }
    }

    fn pause(&mut self, consumer: &SinkConsumer) {
        self.paused = true;
        let assignment = match consumer.assignment() {
            Ok(assignment) => assignment,
            Err(e) => {
                warn!(error = %e, "Cannot read the assignment to pause it; retried with the next record.");
                return;
            }
        };
        if let Err(e) = consumer.pause(&assignment) {
            warn!(error = %e, "Pausing the partitions failed; retried with the next record.");
            return;
        }
        for elem in assignment.elements() {
            self.touched
                .insert((elem.topic().to_owned(), elem.partition()));
        }
    }

    fn resume(&mut self, consumer: &SinkConsumer) {
        let mut partitions = TopicPartitionList::new();
        if let Ok(assignment) = consumer.assignment() {
            for elem in assignment.elements() {
                self.touched
                    .insert((elem.topic().to_owned(), elem.partition()));
            }
        }
        for (topic, partition) in &self.touched {
            partitions.add_partition(topic, *partition);
        }
        match consumer.resume(&partitions) {
            Ok(()) => {
                self.paused = false;
                self.touched.clear();
            }
            Err(e) => {
                warn!(error = %e, "Resuming the partitions failed; retried when the pause state changes next.");
            }
        }
    }
}
