//! The consumer loop: Kafka records -> decode -> plan -> Redis, at least once.
//!
//! Two stages joined by a small bounded channel, so that decoding the next batch overlaps
//! with Redis applying the current one:
//!
//! 1. The *consume* stage owns the message stream. One `select!` waits for shutdown, the next
//!    record, the batch's linger deadline and the apply stage's fate. Each record is decoded
//!    ([`Decoder`]) and planned ([`mapping::plan`]) as it arrives; a record that cannot be
//!    decoded or planned goes to the dead-letter topic ([`DeadLetters`]) and the loop moves
//!    on. A batch is handed over when it holds `batch.max_records` records or its linger
//!    time has passed.
//! 2. The *apply* stage first records a mapping's column types when its value schema
//!    changed, then splits the batch by partition: each partition has a lane that sends its
//!    slices to Redis one after another, each as one pipeline ([`Applier::apply_batch`]),
//!    and stores the partition's offset once a slice is applied. Lanes run concurrently
//!    (partitions in parallel, each in order), which keeps Redis busy.
//!
//! # Why delivery is at least once
//!
//! `enable.auto.offset.store=false`: librdkafka commits (automatically, every few seconds,
//! and once more synchronously at shutdown) only offsets the sink stored, and the sink stores
//! a partition's offset only after Redis applied every record up to it. Every partition is
//! consumed, planned and applied in order (one lane per partition applies its slices one
//! after another, each in consumption order), so a stored offset never passes a record that
//! was not applied. After a crash the records after the last commit are delivered again; the Lua
//! scripts' position guards make replaying them harmless. Retriable failures (Redis I/O, the
//! registry or the broker unreachable) are retried with backoff without storing anything.
//!
//! # Start and stop
//!
//! [`consume`] works with whatever consumer it is given (a group subscription for `sink run`;
//! a manual assignment would do as well) and stops on shutdown or, with
//! [`StopWhen::CaughtUp`], as soon as every assigned partition is applied up to its high
//! watermark (used by benchmarks and a future `sink rebuild`).

mod apply_stage;
pub mod batch;
pub mod offsets;
pub mod progress;
pub mod retry;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapping::{one_line, Config};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::apply::{Applier, ApplyError, PlannedChange};
use crate::config::BatchSettings;
use crate::decode::{DecodeError, Decoder};
use crate::dlq::{DeadLetters, DlqError};
use batch::Batch;
use offsets::OffsetsClient;
use progress::{Progress, SinkContext};
use retry::Backoff;

/// The consumer type the sink uses.
pub type SinkConsumer = StreamConsumer<SinkContext>;

/// How often the caught-up check runs while the sink runs until shut down: it only keeps
/// `caught_up_at_ms` fresh for idle tables, so once a second is plenty.
const CAUGHT_UP_INTERVAL: Duration = Duration::from_secs(1);
/// How often it runs when the sink stops at the end of the log ([`StopWhen::CaughtUp`]):
/// the check is the stop's latency, and with [`offsets`] it costs one quick round trip per
/// partition.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Timeout of each broker request of the caught-up check.
const CAUGHT_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches decoded ahead of the one Redis is applying. Deep enough that Redis never waits
/// for the next batch while the consume stage decodes: the rebuild of 1,000,000 events went
/// from 12.1-13.9 s to 10.8-11.5 s with 8 instead of 2 (and 4 slices per lane instead of 2;
/// BENCHMARKS.md, *Rebuild speed*).
const QUEUED_BATCHES: usize = 8;

/// Why consuming stopped with an error.
#[derive(Debug, Error)]
pub enum ConsumeError {
    /// The consumer could not be created.
    #[error("cannot create the kafka consumer")]
    Create(#[source] KafkaError),
    /// The subscription was refused.
    #[error("cannot subscribe to {topics}")]
    Subscribe {
        /// The topics, comma-separated.
        topics: String,
        /// What librdkafka reported.
        #[source]
        source: KafkaError,
    },
    /// A dead letter could not be written, for a reason retrying does not fix.
    #[error("dead-lettering a record failed")]
    DeadLetter(#[source] Box<DlqError>),
    /// Redis rejected a batch for a reason retrying does not fix.
    #[error("applying a batch of {changes} changes to redis failed")]
    Apply {
        /// Changes in the batch.
        changes: usize,
        /// What the applier reported.
        #[source]
        source: ApplyError,
    },
    /// Redis rejected many changes in a row: something systematic, not a bad record.
    #[error("redis rejected {count} changes in a row (batch of {changes}); stopping rather than dead-lettering the stream")]
    Rejected {
        /// Changes rejected in a row.
        count: u32,
        /// Changes in the batch.
        changes: usize,
        /// The last rejection.
        #[source]
        source: ApplyError,
    },
    /// The apply task ended without reporting (it panicked).
    #[error("the apply stage stopped unexpectedly")]
    ApplyStage,
    /// The final synchronous offset commit failed.
    #[error("final offset commit failed")]
    Commit(#[source] KafkaError),
}

/// When [`consume`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when shutdown is requested (`sink run`).
    Shutdown,
    /// As soon as every assigned partition is applied up to its high watermark (or at
    /// shutdown, whichever comes first).
    CaughtUp,
}

/// Counts of one [`consume`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records consumed and settled (applied or dead-lettered).
    pub records: u64,
    /// Changes applied to Redis.
    pub changes: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Of the changes applied, those that were no-ops (replays, older than what is stored).
    pub skipped: u64,
    /// Batches applied.
    pub batches: u64,
    /// When the first record arrived (for throughput measurements).
    pub first_record_at: Option<std::time::Instant>,
    /// When the last batch was applied.
    pub last_applied_at: Option<std::time::Instant>,
}

/// What the consume loop needs besides the consumer.
pub struct Pipeline {
    /// The validated mappings.
    pub config: Arc<Config>,
    /// Record bytes -> change.
    pub decoder: Arc<Decoder>,
    /// Plans -> Redis.
    pub applier: Applier,
    /// Poison records -> dead-letter topic.
    pub dead_letters: Arc<DeadLetters>,
    /// Batch limits.
    pub batch: BatchSettings,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// Creates the sink's consumer from `config` (see [`crate::config::SinkConfig::consumer_config`])
/// and subscribes it to `topics`.
pub fn subscribe(
    config: &ClientConfig,
    topics: &[&str],
) -> Result<Arc<SinkConsumer>, ConsumeError> {
    let consumer: SinkConsumer = config
        .create_with_context(SinkContext::default())
        .map_err(ConsumeError::Create)?;
    consumer
        .subscribe(topics)
        .map_err(|source| ConsumeError::Subscribe {
            topics: topics.join(","),
            source,
        })?;
    Ok(Arc::new(consumer))
}

/// Work for the apply stage.
#[derive(Debug)]
pub(crate) enum Work {
    /// Apply, then store the offsets.
    Batch(Batch),
    /// Every assigned partition of these mappings' topics is at its end.
    CaughtUp(Vec<usize>),
}

/// Consumes until `stop` says so, then commits the stored offsets synchronously.
///
/// `offsets` reads the watermarks for the caught-up check on connections of its own (see
/// [`offsets`]).
pub async fn consume(
    consumer: Arc<SinkConsumer>,
    offsets: Arc<OffsetsClient>,
    pipeline: Pipeline,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, ConsumeError> {
    let Pipeline {
        config,
        decoder,
        applier,
        dead_letters,
        batch,
    } = pipeline;
    let progress = consumer.context().progress.clone();
    let (tx, rx) = mpsc::channel(QUEUED_BATCHES);

    // Stops the helpers once the consume stage is done (and the helpers when shutting down).
    let done = shutdown.child_token();
    let caught_up = CancellationToken::new();
    let mut apply = tokio::spawn(apply_stage::apply_stage(
        rx,
        Arc::clone(&consumer),
        applier,
        Arc::clone(&dead_letters),
        progress.clone(),
        shutdown.clone(),
    ));
    let check_every = match stop {
        StopWhen::Shutdown => CAUGHT_UP_INTERVAL,
        StopWhen::CaughtUp => STOP_CHECK_INTERVAL,
    };
    let watch = CaughtUpWatch {
        consumer: Arc::clone(&consumer),
        offsets,
        every: check_every,
        config: Arc::clone(&config),
        progress,
    };
    let watcher = tokio::spawn(watch_caught_up(
        watch,
        tx.clone(),
        caught_up.clone(),
        done.clone(),
    ));

    let mut stage = ConsumeStage::new(&config, &decoder, &dead_letters, batch, &shutdown);
    let consumed = stage
        .run(&consumer, &tx, stop, &caught_up, &mut apply)
        .await;
    done.cancel();
    if watcher.await.is_err() {
        warn!("Caught-up check panicked.");
    }
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
    if let Err(e) = dead_letters.flush(Duration::from_secs(10)) {
        warn!(error = %e, "Flushing dead letters failed.");
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(ConsumeError::Commit(e)),
    }
    info!(
        records = summary.records,
        changes = summary.changes,
        dead_lettered = summary.dead_lettered,
        "Consumer stopped; offsets committed."
    );
    Ok(summary)
}

type ApplyResult = Result<Summary, ConsumeError>;
type ApplyHandle = tokio::task::JoinHandle<ApplyResult>;

/// The consume stage's state.
struct ConsumeStage<'a> {
    config: &'a Config,
    decoder: &'a Decoder,
    dead_letters: &'a DeadLetters,
    settings: BatchSettings,
    shutdown: &'a CancellationToken,
    /// Mapping index and shared topic name, by topic.
    by_topic: HashMap<String, (usize, Arc<str>)>,
    /// Last value schema id seen per mapping.
    schema_ids: Vec<Option<u32>>,
    dead_lettered: u64,
    first_record_at: Option<std::time::Instant>,
}

/// Whether to go on.
enum Step {
    Continue,
    Shutdown,
}

impl<'a> ConsumeStage<'a> {
    fn new(
        config: &'a Config,
        decoder: &'a Decoder,
        dead_letters: &'a DeadLetters,
        settings: BatchSettings,
        shutdown: &'a CancellationToken,
    ) -> Self {
        let by_topic = config
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| (m.topic.clone(), (i, Arc::from(m.topic.as_str()))))
            .collect();
        ConsumeStage {
            config,
            decoder,
            dead_letters,
            settings,
            shutdown,
            by_topic,
            schema_ids: vec![None; config.mappings.len()],
            dead_lettered: 0,
            first_record_at: None,
        }
    }

    /// The `select!` loop; returns the apply task (still running) when it stops normally.
    async fn run(
        &mut self,
        consumer: &SinkConsumer,
        tx: &mpsc::Sender<Work>,
        stop: StopWhen,
        caught_up: &CancellationToken,
        apply: &mut ApplyHandle,
    ) -> Result<(Summary, Option<ApplyResult>), ConsumeError> {
        let mut stream = consumer.stream();
        let mut batch = Batch::with_capacity(self.settings.max_records);
        let mut linger = pin!(tokio::time::sleep(Duration::ZERO));
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = caught_up.cancelled(), if stop == StopWhen::CaughtUp && batch.is_empty() => break,
                result = &mut *apply => {
                    // The apply stage only ends early on a fatal error or shutdown.
                    let result = result.unwrap_or(Err(ConsumeError::ApplyStage));
                    return Ok((self.summary(), Some(result)));
                }
                () = &mut linger, if !batch.is_empty() => {
                    if !self.hand_over(&mut batch, tx).await {
                        break;
                    }
                }
                message = stream.next() => match message {
                    None => break,
                    Some(Err(e)) => log_consumer_error(&e),
                    Some(Ok(message)) => {
                        if batch.is_empty() {
                            linger.as_mut().reset(Instant::now() + self.settings.linger);
                            self.first_record_at.get_or_insert_with(std::time::Instant::now);
                        }
                        if let Step::Shutdown = self.consume_record(&message, &mut batch).await? {
                            break;
                        }
                        if batch.records >= self.settings.max_records
                            && !self.hand_over(&mut batch, tx).await
                        {
                            break;
                        }
                    }
                },
            }
        }
        // A partial batch is dropped: its offsets were not stored, so it is delivered again.
        Ok((self.summary(), None))
    }

    fn summary(&self) -> Summary {
        Summary {
            dead_lettered: self.dead_lettered,
            first_record_at: self.first_record_at,
            ..Summary::default()
        }
    }

    /// Sends the batch to the apply stage (waiting while it is busy); `false` at shutdown.
    async fn hand_over(&self, batch: &mut Batch, tx: &mpsc::Sender<Work>) -> bool {
        let full = std::mem::replace(batch, Batch::with_capacity(self.settings.max_records));
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            sent = tx.send(Work::Batch(full)) => sent.is_ok(),
        }
    }

    /// Decodes and plans one record into `batch`, or dead-letters it.
    async fn consume_record(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<Step, ConsumeError> {
        let topic = message.topic();
        let partition = message.partition();
        let offset = message.offset();
        let Some((mapping, topic_name)) = self.by_topic.get(topic) else {
            // Not subscribed by us; cannot happen with a subscription to mapped topics only.
            debug!(%topic, partition, offset, "Skipped a record of an unmapped topic.");
            return Ok(Step::Continue);
        };
        let (mapping, topic_name) = (*mapping, Arc::clone(topic_name));
        let timestamp = message.timestamp().to_millis();

        let mut backoff = Backoff::default();
        let decoded = loop {
            match self
                .decoder
                .decode(topic, message.key(), message.payload(), timestamp)
                .await
            {
                Err(e) if e.is_retriable() => {
                    if !backoff.wait("Decoding a record", &e, self.shutdown).await {
                        return Ok(Step::Shutdown);
                    }
                }
                other => break other,
            }
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(e) => {
                let step = self.dead_letter(message, &decode_failure(&e)).await?;
                batch.note_offset(&topic_name, partition, offset);
                return Ok(step);
            }
        };
        let m = &self.config.mappings[mapping];
        match mapping::plan(m, &decoded.change) {
            Ok(plan) => {
                if let (Some(id), Some(columns)) = (decoded.value_schema_id, &decoded.columns) {
                    if self.schema_ids[mapping] != Some(id) {
                        self.schema_ids[mapping] = Some(id);
                        batch.column_types.push((mapping, Arc::clone(columns)));
                    }
                }
                let change = PlannedChange {
                    mapping,
                    plan,
                    source_ts_ms: decoded.change.source_ts_ms,
                    topic: topic_name.clone(),
                    partition,
                    offset,
                };
                batch.push_change(change, message.key(), message.payload());
                batch.note_offset(&topic_name, partition, offset);
                Ok(Step::Continue)
            }
            Err(e) => {
                let error = format!("cannot map to {}: {}", m.name, one_line(&e));
                let step = self.dead_letter(message, &error).await?;
                batch.note_offset(&topic_name, partition, offset);
                Ok(step)
            }
        }
    }

    /// Writes `message` to the dead-letter topic, retrying transient failures.
    async fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        error: &str,
    ) -> Result<Step, ConsumeError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        warn!(%topic, partition, offset, %error, dlq = self.dead_letters.topic(), "Dead-lettering a record.");
        let mut backoff = Backoff::default();
        loop {
            match self.dead_letters.send(message, error).await {
                Ok(()) => {
                    self.dead_lettered += 1;
                    return Ok(Step::Continue);
                }
                Err(e) if dlq_retriable(&e) => {
                    if !backoff
                        .wait("Dead-lettering a record", &e, self.shutdown)
                        .await
                    {
                        return Ok(Step::Shutdown);
                    }
                }
                Err(e) => return Err(ConsumeError::DeadLetter(Box::new(e))),
            }
        }
    }
}

/// The `dlq.error` text for a record that could not be decoded.
fn decode_failure(e: &DecodeError) -> String {
    format!("cannot decode: {}", one_line(e))
}

/// Whether a failed dead letter may succeed later.
pub(crate) fn dlq_retriable(e: &DlqError) -> bool {
    match e {
        DlqError::Create(_) => false,
        DlqError::Send { source, .. } => !matches!(
            source.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::InvalidRecord
            )
        ),
    }
}

/// Consumer errors are transient from the sink's point of view (librdkafka reconnects);
/// they are logged, not fatal.
fn log_consumer_error(e: &KafkaError) {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            info!(error = %e, "A mapped topic does not exist yet; waiting for it.");
        }
        _ => warn!(error = %e, "Kafka consumer error."),
    }
}

/// What the caught-up check reads.
struct CaughtUpWatch {
    /// Its assignment (a local call).
    consumer: Arc<SinkConsumer>,
    /// The watermarks and committed offsets (broker round trips).
    offsets: Arc<OffsetsClient>,
    /// How often to check.
    every: Duration,
    config: Arc<Config>,
    progress: Progress,
}

/// Every `watch.every`, checks whether the assigned partitions are applied up to their high
/// watermarks; if so, tells the apply stage to record it and cancels `caught_up`.
async fn watch_caught_up(
    watch: CaughtUpWatch,
    tx: mpsc::Sender<Work>,
    caught_up: CancellationToken,
    done: CancellationToken,
) {
    let CaughtUpWatch {
        consumer,
        offsets,
        every,
        config,
        progress,
    } = watch;
    let topics: Vec<String> = config.mappings.iter().map(|m| m.topic.clone()).collect();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_caught_up = false;
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
        let (o, p, t) = (Arc::clone(&offsets), progress.clone(), topics.clone());
        let standing = tokio::task::spawn_blocking(move || {
            progress::check(&assignment, &o, &p, &t, CAUGHT_UP_TIMEOUT)
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
        let now = standing.caught_up();
        if now != was_caught_up {
            if now {
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
        let mappings: Vec<usize> = config
            .mappings
            .iter()
            .enumerate()
            .filter(|(_, m)| fresh_topics.contains(&m.topic.as_str()))
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
