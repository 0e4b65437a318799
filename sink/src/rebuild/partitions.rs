//! The partitions a rebuild replays: every partition of every mapped topic (the pipeline reads
//! them from the beginning), with the high watermarks read at the start as the end of the
//! replay; and [`Tracker`], which says when each of them is done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::pipeline::{OffsetsClient, Progress};

/// Timeout of each broker request.
pub(super) const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a partition whose consumer position is at its end may show no applied progress,
/// while no other partition progresses either (nothing consumed is still waiting to be
/// applied), before the rest of it counts as a gap (records removed by compaction,
/// transaction markers: offsets that never reach the sink).
const GAP_STALL: Duration = Duration::from_secs(3);

/// One partition to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTarget {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Low watermark at the start: the first offset the replay reads.
    pub low: i64,
    /// High watermark at the start: the replay is done when everything before it is applied.
    pub high: i64,
}

impl PartitionTarget {
    /// The `sink:offsets` field of this partition.
    pub fn field(&self) -> String {
        mapping::layout::offsets_field(&self.topic, self.partition)
    }
}

/// Reads the partitions of `topics` and their watermarks (blocking network calls, each
/// bounded by `timeout`). A topic that does not exist has nothing to replay: it is skipped
/// with a warning.
pub async fn discover(
    offsets: Arc<OffsetsClient>,
    topics: Vec<String>,
    timeout: Duration,
) -> KafkaResult<Vec<PartitionTarget>> {
    tokio::task::spawn_blocking(move || {
        let mut targets = Vec::new();
        for topic in &topics {
            let metadata = offsets.metadata(topic, timeout)?;
            let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
                warn!(%topic, "Mapped topic not found; nothing to replay from it.");
                continue;
            };
            if let Some(e) = meta.error() {
                warn!(%topic, error = ?e, "Mapped topic not available; nothing to replay from it.");
                continue;
            }
            let mut partitions: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            for partition in partitions {
                let (low, high) = offsets.watermarks(topic, partition, timeout)?;
                targets.push(PartitionTarget {
                    topic: topic.clone(),
                    partition,
                    low,
                    high,
                });
            }
        }
        Ok(targets)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// The current high watermark of one partition (blocking).
pub async fn high_watermark(
    offsets: Arc<OffsetsClient>,
    topic: String,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<i64> {
    tokio::task::spawn_blocking(move || {
        offsets
            .watermarks(&topic, partition, timeout)
            .map(|(_, high)| high)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Where one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    /// Next offset to apply (everything before it was applied or dead-lettered).
    pub next: i64,
    /// Whether the replay of this partition reached its start-time high watermark.
    pub done: bool,
}

/// Follows the replay of the targets, from the consume loop's [`Progress`].
#[derive(Debug)]
pub struct Tracker {
    targets: Vec<PartitionTarget>,
    /// Last `next` seen and since when, per target.
    seen: Vec<(i64, Instant)>,
    /// Partitions already declared done through a gap.
    gaps: Vec<bool>,
    /// When any partition last progressed.
    last_progress: Instant,
}

impl Tracker {
    /// Starts following `targets`.
    pub fn new(targets: Vec<PartitionTarget>) -> Tracker {
        let now = Instant::now();
        let seen = targets.iter().map(|t| (t.low, now)).collect();
        let gaps = vec![false; targets.len()];
        Tracker {
            targets,
            seen,
            gaps,
            last_progress: now,
        }
    }

    /// The partitions followed.
    pub fn targets(&self) -> &[PartitionTarget] {
        &self.targets
    }

    /// Where each target stands now. `positions` is the consumer's fetch position
    /// ([`crate::pipeline::Running::positions`]), used to recognise a tail that holds no
    /// records.
    pub fn poll(
        &mut self,
        progress: &Progress,
        positions: &TopicPartitionList,
    ) -> Vec<PartitionState> {
        let now = Instant::now();
        let nexts: Vec<i64> = self
            .targets
            .iter()
            .map(|t| {
                progress
                    .next(&t.topic, t.partition)
                    .unwrap_or(t.low)
                    .max(t.low)
            })
            .collect();
        for (i, &next) in nexts.iter().enumerate() {
            if next != self.seen[i].0 {
                self.seen[i] = (next, now);
                self.last_progress = now;
            }
        }
        let idle = now - self.last_progress >= GAP_STALL;
        let mut states = Vec::with_capacity(self.targets.len());
        for (i, t) in self.targets.iter().enumerate() {
            let next = nexts[i];
            let mut done = next >= t.high || self.gaps[i];
            if !done {
                let position =
                    positions
                        .find_partition(&t.topic, t.partition)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                if position.is_some_and(|p| p >= t.high) && idle {
                    debug!(topic = %t.topic, partition = t.partition, next, high = t.high,
                        "Partition read to its end; the offsets left hold no records.");
                    self.gaps[i] = true;
                    done = true;
                }
            }
            states.push(PartitionState { next, done });
        }
        states
    }

    /// Records replayed per topic: offsets settled since the low watermark (a gap counts
    /// its offsets once it is declared).
    pub fn per_topic(&self, states: &[PartitionState]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (t, s) in self.targets.iter().zip(states) {
            let end = if s.done { s.next.max(t.high) } else { s.next };
            let n = u64::try_from(end.min(t.high) - t.low).unwrap_or(0);
            *out.entry(t.topic.clone()).or_insert(0) += n;
        }
        out
    }

    /// Records to replay per topic (sum of high - low).
    pub fn totals(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in &self.targets {
            *out.entry(t.topic.clone()).or_insert(0) += u64::try_from(t.high - t.low).unwrap_or(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(partition: i32, low: i64, high: i64) -> PartitionTarget {
        PartitionTarget {
            topic: "t".into(),
            partition,
            low,
            high,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn done_at_the_high_watermark_or_after_a_stalled_tail() {
        let progress = Progress::default();
        let mut tracker = Tracker::new(vec![target(0, 0, 10), target(1, 5, 5), target(2, 0, 4)]);
        let positions = TopicPartitionList::new();
        let s = tracker.poll(&progress, &positions);
        assert_eq!(
            s.iter().map(|s| s.done).collect::<Vec<_>>(),
            vec![false, true, false]
        );
        progress.applied("t", 0, 10);
        progress.applied("t", 2, 3);
        let s = tracker.poll(&progress, &positions);
        assert!(s[0].done && !s[2].done);
        // Partition 2: read to offset 4 but offset 3 never arrives (a gap).
        let mut positions = TopicPartitionList::new();
        positions
            .add_partition_offset("t", 2, Offset::Offset(4))
            .unwrap();
        assert!(!tracker.poll(&progress, &positions)[2].done);
        // Another partition still progressing: its batches may hold partition 2's records.
        tokio::time::advance(GAP_STALL).await;
        progress.applied("t", 3, 1);
        let mut tracker_with_3 = Tracker::new(vec![target(2, 0, 4), target(3, 0, 9)]);
        tracker_with_3.poll(&progress, &positions);
        tokio::time::advance(GAP_STALL / 2).await;
        progress.applied("t", 3, 2);
        assert!(!tracker_with_3.poll(&progress, &positions)[0].done);
        tokio::time::advance(GAP_STALL).await;
        assert!(tracker_with_3.poll(&progress, &positions)[0].done);
        let s = tracker.poll(&progress, &positions);
        assert!(s[2].done);
        assert_eq!(tracker.per_topic(&s)["t"], 14);
        assert_eq!(tracker.totals()["t"], 14);
    }
}
