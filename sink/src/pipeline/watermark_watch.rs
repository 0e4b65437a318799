//! The watermark watcher: turns consumed heartbeats into `sink:watermark:{source}` by the rule
//! of `watermark.rs`. For a source's newest confirmation it reads the high watermarks of every
//! partition of the source's mapped topics (after the heartbeat was consumed), waits until
//! [`Progress`] (or, for partitions this sink did not apply in this run, the group's committed
//! offsets, which are only ever committed after Redis applied them) reaches them, and then
//! has the apply stage write the watermark, so that it is never ahead of Redis.
//!
//! A rebuild reads from the beginning outside the group: there only its own [`Progress`]
//! counts, so the staging database gets a watermark of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mapping::Config;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::apply_stage::Work;
use super::offsets::OffsetsClient;
use super::progress::Progress;
use super::watermark::{Heartbeat, Pending, SourceTracker};

/// How often a pending watermark is checked: it bounds what the check adds to the
/// watermark's lag (BENCHMARKS.md, "Source watermark lag").
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Timeout of each broker request.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeats queued between the consume stage and the watcher; when full, the consume stage
/// drops heartbeats (the watermark then advances with a later one), never waits.
pub(super) const HEARTBEAT_QUEUE: usize = 64;

/// What the watcher reads.
pub(super) struct WatermarkWatch {
    /// The sources and the topics of their mappings.
    pub config: Arc<Config>,
    /// High watermarks and committed offsets.
    pub offsets: Arc<OffsetsClient>,
    /// Where the apply stage stands.
    pub progress: Progress,
    /// Whether the group's committed offsets count as applied (`sink run`, not a rebuild).
    pub trust_committed: bool,
}

/// One source's state.
#[derive(Default)]
struct SourceState {
    tracker: SourceTracker,
    pending: Option<Pending>,
}

impl WatermarkWatch {
    /// Runs until `done`: heartbeats from `heartbeats`, watermarks to the apply stage on `tx`.
    pub(super) async fn run(
        self,
        mut heartbeats: mpsc::Receiver<Heartbeat>,
        tx: mpsc::Sender<Work>,
        done: CancellationToken,
    ) {
        let this = Arc::new(self);
        let mut sources: Vec<SourceState> = this
            .config
            .sources
            .iter()
            .map(|_| SourceState::default())
            .collect();
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => return,
                heartbeat = heartbeats.recv() => match heartbeat {
                    Some(h) => {
                        if let Some(state) = sources.get_mut(h.source) {
                            state.tracker.observe(h);
                        }
                        continue;
                    }
                    None => return,
                },
                _ = ticks.tick() => {}
            }
            for (i, state) in sources.iter_mut().enumerate() {
                if state.pending.is_none() {
                    if let Some(watermark) = state.tracker.candidate() {
                        // After the heartbeat was consumed: its confirmed records are in the log.
                        match this.blocking(move |w| w.targets(i)).await {
                            Some(Ok(targets)) => {
                                state.pending = Some(Pending { watermark, targets });
                            }
                            Some(Err(e)) => debug!(error = %e, "Reading high watermarks failed."),
                            None => return,
                        }
                    }
                }
                let Some(pending) = state.pending.clone() else {
                    continue;
                };
                let reached = match this.blocking(move |w| w.reached(&pending)).await {
                    Some(Ok(reached)) => reached,
                    Some(Err(e)) => {
                        debug!(error = %e, "Reading committed offsets failed.");
                        continue;
                    }
                    None => return,
                };
                if !reached {
                    continue;
                }
                let Some(Pending { watermark, .. }) = state.pending.take() else {
                    continue;
                };
                let source = this.config.sources[i].name.clone();
                tokio::select! {
                    biased;
                    () = done.cancelled() => return,
                    _ = tx.send(Work::Watermark { source, watermark }) => {}
                }
            }
        }
    }

    /// Runs `f` on a blocking thread; `None` if it panicked.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&WatermarkWatch) -> T + Send + 'static,
    ) -> Option<T> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&this)).await.ok()
    }

    /// `(topic, partition, high watermark)` of every non-empty partition of source `i`'s
    /// mapped topics.
    fn targets(&self, i: usize) -> KafkaResult<Vec<(String, i32, i64)>> {
        let mut targets = Vec::new();
        for name in &self.config.sources[i].mappings {
            let Some(mapping) = self.config.mapping(name) else {
                continue;
            };
            let metadata = self.offsets.metadata(&mapping.topic, KAFKA_TIMEOUT)?;
            for topic in metadata.topics() {
                for p in topic.partitions() {
                    let (low, high) =
                        self.offsets
                            .watermarks(topic.name(), p.id(), KAFKA_TIMEOUT)?;
                    if high > low {
                        targets.push((topic.name().to_owned(), p.id(), high));
                    }
                }
            }
        }
        Ok(targets)
    }

    /// Whether every target of `pending` is applied.
    fn reached(&self, pending: &Pending) -> KafkaResult<bool> {
        let mut committed: HashMap<(String, i32), i64> = HashMap::new();
        if self.trust_committed {
            let mut unknown = TopicPartitionList::new();
            for (topic, partition, _) in &pending.targets {
                if self.progress.next(topic, *partition).is_none() {
                    unknown.add_partition(topic, *partition);
                }
            }
            if unknown.count() > 0 {
                for elem in self.offsets.committed(unknown, KAFKA_TIMEOUT)?.elements() {
                    if let Offset::Offset(offset) = elem.offset() {
                        committed.insert((elem.topic().to_owned(), elem.partition()), offset);
                    }
                }
            }
        }
        Ok(pending.reached(|topic, partition| {
            let applied = self.progress.next(topic, partition).unwrap_or(-1);
            let committed = committed
                .get(&(topic.to_owned(), partition))
                .copied()
                .unwrap_or(-1);
            applied.max(committed)
        }))
    }
}
