//! The pipeline: Kafka records -> decode -> plan -> Redis, at least once. `sink run` and
//! `sink rebuild` both start it here ([`Pipeline::connect`], then [`Pipeline::start`]); they
//! differ only in where the consumer starts (the group's offsets, or every partition from the
//! beginning), which applier writes Redis and when to stop.
//!
//! # Stages
//!
//! Two stages joined by a small bounded channel, so that decoding the next batch overlaps
//! with Redis applying the current one:
//!
//! 1. The *consume* stage (`consume_stage.rs`) owns the message stream. Each record is decoded
//!    ([`crate::decode::Decoder`]) and planned ([`mapping::plan`]) as it arrives; a record that
//!    cannot be decoded or planned goes to the dead-letter topic ([`crate::dlq`]) and the loop
//!    moves on. A batch (`batch.rs`) is handed over when it holds `batch.max_records` records
//!    or `batch.max_bytes` bytes of keys and values; a partial batch goes at once when the
//!    apply stage has nothing in flight and no further record is at hand, and otherwise when
//!    its linger time has passed (`in_flight.rs`: send at once when Redis is idle, gather
//!    while it is busy).
//! 2. The *apply* stage (`apply_stage.rs`) first records a mapping's column types when its
//!    value schema changed, then splits the batch by partition: each partition has a lane that
//!    sends its slices to Redis one after another, each as one pipeline
//!    ([`Applier::apply_batch`]), and stores the partition's offset once a slice is applied.
//!    Lanes run concurrently (partitions in parallel, each in order), which keeps Redis busy.
//!
//! Beside them, the caught-up watcher (`caught_up.rs`) compares the applied [`Progress`] with
//! the high watermarks, read on a Kafka client of its own ([`OffsetsClient`]). Transient
//! failures are retried with backoff (`retry.rs`); poison records are dead-lettered
//! (`dead_letter.rs`). Records of a source's heartbeat topic map to no rows: the consume stage
//! hands them to the watermark watcher (`watermark_watch.rs`, rule in `watermark.rs`), which
//! has the apply stage record `sink:watermark:{source}` once every change it covers is applied.
//! The Redis memory guard ([`MemoryGuard`]) says whether Redis has room: while it is full
//! (an `OOM` reply, or `used_memory` above the configured share of `maxmemory`) the consume
//! stage pauses the assigned partitions, still polling the consumer so that the group keeps
//! it, and a lane whose slice Redis refused waits for room, then sends the slice again.
//!
//! # Why delivery is at least once
//!
//! `enable.auto.offset.store=false`: librdkafka commits (automatically, every few seconds,
//! and once more synchronously at shutdown) only offsets the sink stored, and the sink stores
//! a partition's offset only after Redis applied every record up to it. Every partition is
//! consumed, planned and applied in order (one lane per partition applies its slices one
//! after another, each in consumption order), so a stored offset never passes a record that
//! was not applied. After a crash the records after the last commit are delivered again; the
//! writers' position guards make replaying them harmless. Retriable failures (Redis I/O, the
//! registry or the broker unreachable, Redis out of memory) are retried with backoff without
//! storing anything.
//!
//! Pausing a partition (Redis full, or the apply stage too far behind; `pause.rs`) loses
//! nothing and repeats nothing: librdkafka drops the records it had prefetched for it (a
//! version barrier set by the pause call itself, so none reaches the sink afterwards) and,
//! on resume, fetches again from the position after the last record it handed to the sink.
//! Every record handed over is kept (in a batch), so the partition goes on exactly after it.
//!
//! # Start and stop
//!
//! [`Pipeline::connect`] runs the start-up checks and creates the consumer; [`Pipeline::start`]
//! subscribes it ([`Source::Group`], `sink run`) or assigns partitions from the beginning
//! ([`Source::FromBeginning`], `sink rebuild`), and spawns the stages. The [`Running`]
//! pipeline stops on shutdown or, with [`StopWhen::CaughtUp`], as soon as every assigned
//! partition is applied up to its high watermark; it then commits the stored offsets.
//!
//! # Self-healing
//!
//! Redis, not the committed offsets, decides where a group's partition starts
//! (`self_heal.rs`): the consumer context sets each assigned partition's start to
//! `min(committed, sink:offsets + 1)`, or to its earliest offset when Redis cannot vouch for
//! `sink:offsets`, and records it as the partition's [`Progress`], so that the caught-up check
//! and the watermark never count the higher committed offset as applied. With
//! [`Source::Group`] a watcher checks once a second that Redis still holds what it
//! acknowledged; when not, it stops the pipeline as at shutdown and reports
//! [`Summary::bookkeeping_lost`], and `sink run` starts a new one, whose assignment rewinds.
//!
//! Every assignment also marks its partitions with a fresh fencing token, and each batch
//! carries the marker of the assignment its records were read under (`fencing.rs`,
//! [`crate::apply::Fences`]): the writers refuse a batch whose assignment another one has
//! superseded, and the lane drops it and the rest of that assignment's batches without
//! stopping the pipeline (`apply_stage.rs`).

mod apply_stage;
mod batch;
mod caught_up;
mod consume_stage;
mod dead_letter;
mod error;
mod fencing;
mod in_flight;
mod offsets;
mod pause;
mod progress;
mod recorded_types;
mod retry;
mod self_heal;
mod summary;
mod watermark;
mod watermark_watch;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::Applier;
use crate::config::{BatchSettings, SinkConfig};
use crate::connection::redis_client;
use crate::decode::Decoder;
use crate::dlq::DeadLetters;
use crate::health;
use crate::memory::{self, MemoryGuard};
use crate::readiness::Readiness;
use crate::registry::Registry;
use crate::telemetry::applied::ApplyMetrics;
use apply_stage::Observers;
use caught_up::CaughtUpWatch;
use consume_stage::ConsumeStage;
use in_flight::InFlight;
use progress::{SinkConsumer, SinkContext};
use self_heal::SelfHeal;
use watermark_watch::WatermarkWatch;

pub use caught_up::StopWhen;
pub use error::{ConsumeError, StartError};
pub use offsets::OffsetsClient;
pub use progress::Progress;
pub(crate) use retry::{Backoff, WAITING_TO_START_MAX_DELAY};
pub(crate) use self_heal::server_run_id;
pub use summary::Summary;

/// Batches decoded ahead of the one Redis is applying. Deep enough that Redis never waits
/// for the next batch while the consume stage decodes: the rebuild of 1,000,000 events went
/// from 12.1-13.9 s to 10.8-11.5 s with 8 instead of 2 (and 4 slices per lane instead of 2;
/// BENCHMARKS.md, *Rebuild speed*).
const QUEUED_BATCHES: usize = 8;

/// Where the consumer starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Subscribes to every mapped topic in the configured group, from the group's offsets.
    Group,
    /// Reads these `(topic, partition)`s from their beginning, outside any group.
    FromBeginning(Vec<(String, i32)>),
}

/// A pipeline whose services answered, with its consumer created but not yet consuming.
pub struct Pipeline {
    cfg: SinkConfig,
    registry: Arc<Registry>,
    consumer: Arc<SinkConsumer>,
    offsets: Arc<OffsetsClient>,
    readiness: Readiness,
    memory: MemoryGuard,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("batch", &self.cfg.batch)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Checks Redis, the registry and Kafka (warning about mapped topics that do not exist
    /// yet) and Redis's eviction policy ([`memory::start`]), then creates the consumer with
    /// `consumer_config` (see [`SinkConfig::consumer_config`]) and the client that reads its
    /// offsets.
    pub async fn connect(
        cfg: &SinkConfig,
        consumer_config: &ClientConfig,
    ) -> Result<Pipeline, StartError> {
        Pipeline::connect_reporting_to(cfg, consumer_config, Readiness::new()).await
    }

    /// [`Pipeline::connect`], the pipeline (and its Redis memory guard) reporting into
    /// `readiness` instead of a new one: `sink run` keeps one across the pipelines of its
    /// configuration reloads and self-healing restarts, so `GET /ready` follows them all.
    pub async fn connect_reporting_to(
        cfg: &SinkConfig,
        consumer_config: &ClientConfig,
        readiness: Readiness,
    ) -> Result<Pipeline, StartError> {
        let config = &cfg.config;
        let registry =
            Arc::new(Registry::new(&config.schema_registry).map_err(StartError::Registry)?);
        health::check_all(
            &config.redis,
            &registry,
            consumer_config,
            &cfg.consumed_topics(),
            health::DEFAULT_TIMEOUT,
        )
        .await?;
        let memory = memory::start(&config.redis, &config.mappings, cfg.memory, &readiness).await?;
        let heal = SelfHeal::new(redis_client(&config.redis).map_err(StartError::RedisClient)?);
        let consumer: SinkConsumer = consumer_config
            .create_with_context(SinkContext::new(Arc::new(heal)))
            .map_err(StartError::Create)?;
        let offsets = OffsetsClient::new(consumer_config).map_err(StartError::Create)?;
        Ok(Pipeline {
            cfg: cfg.clone(),
            registry,
            consumer: Arc::new(consumer),
            offsets: Arc::new(offsets),
            readiness,
            memory,
        })
    }

    /// Whether the pipeline is ready (`GET /ready`); clones share the state, so take it
    /// before [`Pipeline::start`].
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The client that reads watermarks and committed offsets (and topic metadata) without
    /// joining the group.
    pub fn offsets(&self) -> &Arc<OffsetsClient> {
        &self.offsets
    }

    /// Points the consumer at `source` and starts the stages, `applier` writing Redis, until
    /// `stop` says so or `shutdown` is cancelled. The caller keeps the applier's lifecycle:
    /// an exclusive one keeps its lease when the pipeline stops, for the caller to release
    /// ([`Applier::release`]) or hand to the next pipeline (a configuration reload).
    pub fn start(
        self,
        source: Source,
        applier: impl Into<Arc<Applier>>,
        stop: StopWhen,
        shutdown: CancellationToken,
    ) -> Result<Running, StartError> {
        let config = &self.cfg.config;
        let dead_letters = Arc::new(DeadLetters::new(
            &self.cfg.producer_config(),
            &config.kafka.dead_letter_topic,
        )?);
        let trust_committed = source == Source::Group;
        match source {
            Source::Group => {
                let topics = self.cfg.consumed_topics();
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.consumer
                    .subscribe(&topics)
                    .map_err(|source| StartError::Subscribe {
                        topics: topics.join(","),
                        source,
                    })?;
            }
            Source::FromBeginning(partitions) => {
                let mut tpl = TopicPartitionList::new();
                for (topic, partition) in &partitions {
                    tpl.add_partition_offset(topic, *partition, Offset::Beginning)
                        .map_err(StartError::Assign)?;
                }
                self.consumer.assign(&tpl).map_err(StartError::Assign)?;
            }
        }
        let stages = Stages {
            config: Arc::clone(config),
            topics: self.cfg.topics().into(),
            decoder: Arc::new(Decoder::new(self.registry).with_declared_types(&config.mappings)),
            applier: applier.into(),
            dead_letters,
            batch: self.cfg.batch,
            trust_committed,
            readiness: self.readiness,
            memory: self.memory,
        };
        let task = tokio::spawn(consume(
            Arc::clone(&self.consumer),
            Arc::clone(&self.offsets),
            stages,
            stop,
            shutdown,
        ));
        Ok(Running {
            consumer: self.consumer,
            offsets: self.offsets,
            task,
        })
    }
}

/// A started pipeline: where it stands, and its outcome once it stops. Dropping it stops the
/// stages.
pub struct Running {
    consumer: Arc<SinkConsumer>,
    offsets: Arc<OffsetsClient>,
    task: JoinHandle<Result<Summary, ConsumeError>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl Running {
    /// The next offset to apply per partition, as the apply stage records it.
    pub fn progress(&self) -> &Progress {
        &self.consumer.context().progress
    }

    /// The consumer's fetch positions ([`Consumer::position`]): how far it has read, which
    /// may be past records that never reach the sink (compacted away, transaction markers).
    pub fn positions(&self) -> KafkaResult<TopicPartitionList> {
        self.consumer.position()
    }

    /// See [`Pipeline::offsets`].
    pub fn offsets(&self) -> &Arc<OffsetsClient> {
        &self.offsets
    }

    /// Waits until the pipeline stops (by `stop`, at shutdown or on a fatal error) and
    /// returns its counts. Cancel-safe; once it has returned, it must not be awaited again.
    pub async fn stopped(&mut self) -> Result<Summary, ConsumeError> {
        (&mut self.task)
            .await
            .unwrap_or(Err(ConsumeError::ConsumeStage))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the stages share besides the consumer.
struct Stages {
    /// The validated mappings.
    config: Arc<mapping::Config>,
    /// The mapped topics, by mapping index.
    topics: Arc<[String]>,
    /// Record bytes -> change.
    decoder: Arc<Decoder>,
    /// Plans -> Redis.
    applier: Arc<Applier>,
    /// Poison records -> dead-letter topic.
    dead_letters: Arc<DeadLetters>,
    /// Batch limits.
    batch: BatchSettings,
    /// Whether the group's committed offsets count as applied for the watermark (for
    /// partitions of other group members; this process's own start from [`Progress`]), and
    /// whether Redis is watched for lost writes (`sink run`, not a rebuild).
    trust_committed: bool,
    /// What `GET /ready` reports.
    readiness: Readiness,
    /// Whether Redis has room.
    memory: MemoryGuard,
}

/// Runs the stages until `stop` says so, then commits the stored offsets synchronously.
async fn consume(
    consumer: Arc<SinkConsumer>,
    offsets: Arc<OffsetsClient>,
    stages: Stages,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, ConsumeError> {
    let Stages {
        config,
        topics,
        decoder,
        applier,
        dead_letters,
        batch,
        trust_committed,
        readiness,
        memory,
    } = stages;
    let progress = consumer.context().progress.clone();
    let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
    let in_flight = InFlight::default();

    // Also cancelled when Redis lost what it acknowledged: the stages then stop as at
    // shutdown, and `sink run` starts the pipeline again.
    let shutdown = shutdown.child_token();
    // Stops the helpers once the consume stage is done (and the helpers when shutting down).
    let done = shutdown.child_token();
    // Only the group's committed offsets can claim more than Redis holds; a rebuild starts
    // from the beginning.
    let healer = trust_committed.then(|| {
        tokio::spawn(self_heal::watch(
            Arc::clone(&consumer.context().heal),
            memory.clone(),
            shutdown.clone(),
            done.clone(),
        ))
    });
    let caught_up = CancellationToken::new();
    // Watches Redis memory until this function returns: after the consume stage, lanes may
    // still wait for room to apply what they hold.
    let memory_watch = shutdown.child_token();
    tokio::spawn(memory.clone().watch(memory_watch.clone()));
    let _memory_watch = memory_watch.drop_guard();
    let observers = Observers {
        metrics: ApplyMetrics::new(config.mappings.iter().map(|m| m.name.as_str())),
        readiness: readiness.clone(),
    };
    let mut apply = tokio::spawn(apply_stage::apply_stage(
        rx,
        apply_stage::Shared {
            config: Arc::clone(&config),
            consumer: Arc::clone(&consumer),
            applier,
            dead_letters: Arc::clone(&dead_letters),
            progress: progress.clone(),
            memory: memory.clone(),
            shutdown: shutdown.clone(),
            observers,
            in_flight: in_flight.clone(),
        },
    ));
    let (heartbeat_tx, heartbeat_rx) = mpsc::channel(watermark_watch::HEARTBEAT_QUEUE);
    let watermarks = WatermarkWatch {
        config: Arc::clone(&config),
        offsets: Arc::clone(&offsets),
        progress: progress.clone(),
        trust_committed,
    };
    let watermarker = tokio::spawn(watermarks.run(heartbeat_rx, tx.clone(), done.clone()));
    let watch = CaughtUpWatch {
        consumer: Arc::clone(&consumer),
        offsets,
        topics,
        progress,
        readiness,
    };
    let watcher = tokio::spawn(watch.run(stop, tx.clone(), caught_up.clone(), done.clone()));

    let mut stage = ConsumeStage::new(
        &config,
        &decoder,
        &dead_letters,
        batch,
        &shutdown,
        heartbeat_tx,
        memory.subscribe(),
    );
    let consumed = stage
        .run(&consumer, &tx, stop, &caught_up, &mut apply, &in_flight)
        .await;
    done.cancel();
    if watcher.await.is_err() {
        warn!("Caught-up check panicked.");
    }
    if watermarker.await.is_err() {
        warn!("Watermark watcher panicked.");
    }
    let bookkeeping_lost = match healer {
        Some(healer) => healer.await.ok().flatten().is_some(),
        None => false,
    };
    drop(tx);
    let (mut summary, finished) = match consumed {
        Ok(consumed) => consumed,
        Err(e) => {
            apply.abort();
            return Err(e);
        }
    };
    let applied = match finished {
        Some(result) => result?,
        None => apply.await.map_err(|_| ConsumeError::ApplyStage)??,
    };
    summary.changes = applied.changes;
    summary.skipped = applied.skipped;
    summary.batches = applied.batches;
    summary.records = applied.records;
    summary.dead_lettered += applied.dead_lettered;
    summary.last_applied_at = applied.last_applied_at;
    summary.bookkeeping_lost = bookkeeping_lost || applied.bookkeeping_lost;
    if let Err(e) = dead_letters.flush(Duration::from_secs(10)) {
        warn!(error = %e, "Flushing dead letters failed.");
    }
    commit_final_offsets(&consumer, &summary);
    Ok(summary)
}

/// Commits what the pipeline settled, once, as it stops. A failure (the broker or the group
/// coordinator unreachable, the group session expired during an outage) is a warning, not an
/// error: Redis already holds every settled change and its offset, and the next sink of the
/// group starts at the older of the group's commit and Redis's offsets, re-reading changes
/// that the apply skips as already applied. It is the same restart as after a SIGKILL, so
/// exiting non-zero would report a failure that lost nothing.
fn commit_final_offsets(consumer: &SinkConsumer, summary: &Summary) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => info!(
            records = summary.records,
            changes = summary.changes,
            dead_lettered = summary.dead_lettered,
            "Consumer stopped; offsets committed."
        ),
        Err(e) => warn!(
            records = summary.records,
            changes = summary.changes,
            dead_lettered = summary.dead_lettered,
            error = %e,
            "Consumer stopped; the final offset commit failed. The next sink of the group \
             re-reads from the group's last commit and skips what redis already holds."
        ),
    }
}
