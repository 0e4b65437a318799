//! Whether the sink has reached the end of the log ("caught up"): every assigned partition
//! applied up to its high watermark. The watcher checks it periodically, has the apply stage
//! record `caught_up_at_ms` in `sink:freshness:{mapping}` for every topic at its end (so an
//! idle table stays fresh while another is busy), and tells the consume stage when it may stop
//! ([`StopWhen::CaughtUp`]).
//!
//! [`Progress`] says where the sink stands in a partition with applied work; a partition
//! without any in this assignment stands at its committed offset (or its low watermark when the
//! group has none: `auto.offset.reset=earliest`).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::apply_stage::Work;
use super::offsets::OffsetsClient;
use super::progress::{Progress, SinkConsumer};
use crate::readiness::Readiness;
use crate::telemetry::lag::LagGauges;

/// When the pipeline stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when shutdown is requested (`sink run`).
    Shutdown,
    /// As soon as every assigned partition is applied up to its high watermark (or at
    /// shutdown, whichever comes first).
    CaughtUp,
}

/// How often the check runs while the sink runs until shut down: it only keeps
/// `caught_up_at_ms` fresh for idle tables, so once a second is plenty.
const CAUGHT_UP_INTERVAL: Duration = Duration::from_secs(1);
/// How often it runs when the sink stops at the end of the log ([`StopWhen::CaughtUp`]):
/// the check is the stop's latency, and with [`OffsetsClient`] it costs one quick round trip
/// per partition.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Timeout of each broker request of the check.
const CAUGHT_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the caught-up check reads.
pub(super) struct CaughtUpWatch {
    /// Its assignment (a local call).
    pub consumer: Arc<SinkConsumer>,
    /// The watermarks and committed offsets (broker round trips).
    pub offsets: Arc<OffsetsClient>,
    /// The mapped topics, by mapping index.
    pub topics: Arc<[String]>,
    /// Where the apply stage stands.
    pub progress: Progress,
    /// Told once every partition has caught up.
    pub readiness: Readiness,
}

impl CaughtUpWatch {
    /// Checks whether the assigned partitions are applied up to their high watermarks, as
    /// often as `stop` needs; tells the apply stage which mappings are fresh and cancels
    /// `caught_up` once all are, until `done`.
    pub(super) async fn run(
        self,
        stop: StopWhen,
        tx: mpsc::Sender<Work>,
        caught_up: CancellationToken,
        done: CancellationToken,
    ) {
        let CaughtUpWatch {
            consumer,
            offsets,
            topics,
            progress,
            readiness,
        } = self;
        let every = match stop {
            StopWhen::Shutdown => CAUGHT_UP_INTERVAL,
            StopWhen::CaughtUp => STOP_CHECK_INTERVAL,
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_caught_up = false;
        let mut lag = LagGauges::default();
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let assignment = match consumer.assignment() {
                Ok(assignment) => assignment,
                Err(e) => {
                    debug!(error = %e, "Caught-up check failed.");
                    continue;
                }
            };
            let (o, p, t) = (Arc::clone(&offsets), progress.clone(), Arc::clone(&topics));
            let standing = tokio::task::spawn_blocking(move || {
                check(&assignment, &o, &p, &t, CAUGHT_UP_TIMEOUT)
            })
            .await;
            let standing = match standing {
                Ok(Ok(standing)) => standing,
                Ok(Err(e)) => {
                    debug!(error = %e, "Caught-up check failed.");
                    continue;
                }
                Err(_) => return,
            };
            lag.set(
                standing
                    .partitions
                    .iter()
                    .map(|p| (p.topic.as_str(), p.partition, p.high - p.next)),
            );
            let now = standing.caught_up();
            if now != was_caught_up {
                if now {
                    readiness.mark_caught_up();
                    info!(
                        partitions = standing.partitions.len(),
                        "Caught up with every assigned partition."
                    );
                } else {
                    debug!(lag = standing.lag(), "Behind the end of the log.");
                }
                was_caught_up = now;
            }
            // Per topic, so that an idle mapping stays fresh while another one is busy.
            let fresh_topics = standing.caught_up_topics();
            let mappings: Vec<usize> = topics
                .iter()
                .enumerate()
                .filter(|(_, topic)| fresh_topics.contains(&topic.as_str()))
                .map(|(i, _)| i)
                .collect();
            if !mappings.is_empty() {
                tokio::select! {
                    biased;
                    () = done.cancelled() => return,
                    _ = tx.send(Work::CaughtUp(mappings)) => {}
                }
            }
            if now {
                caught_up.cancel();
            }
        }
    }
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionLag {
    /// Topic.
    topic: String,
    /// Partition.
    partition: i32,
    /// Next offset to apply.
    next: i64,
    /// High watermark (offset of the next record to be written).
    high: i64,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Standing {
    /// Every assigned partition of a mapped topic.
    partitions: Vec<PartitionLag>,
}

impl Standing {
    /// Whether partitions are assigned and each is at its high watermark.
    fn caught_up(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.iter().all(|p| p.next >= p.high)
    }

    /// Records between the sink and the end of the log, over all partitions.
    fn lag(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| (p.high - p.next).max(0))
            .sum()
    }

    /// The assigned topics whose every assigned partition is at its high watermark: their
    /// mappings are fresh even while other topics are still busy.
    fn caught_up_topics(&self) -> Vec<&str> {
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
    fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.partitions.iter().map(|p| p.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}

/// Compares [`Progress`] with the high watermarks of the `assignment`'s partitions of
/// `topics` (blocking: network round trips through `offsets`, each bounded by `timeout`).
fn check(
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
}
