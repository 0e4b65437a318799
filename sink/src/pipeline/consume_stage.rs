//! The consume stage: owns the message stream. One `select!` waits for shutdown, the next
//! record, the batch's linger deadline, the caught-up signal and the apply stage's fate. Each
//! record is decoded ([`Decoder`]) and planned ([`mapping::plan`]) as it arrives; a record
//! that cannot be decoded or planned is dead-lettered and the loop moves on. A record of a
//! heartbeat topic is decoded and handed to the watermark watcher; it maps to no rows. A batch is
//! handed to the apply stage when it holds `batch.max_records` records or `batch.max_bytes`
//! bytes (a record that would pass the byte bound starts the next batch), at once when the
//! apply stage has nothing in flight and no further record is at hand (`in_flight.rs`), or
//! when its linger time has passed while Redis is busy. The stage also pauses and resumes the partitions (`pause.rs`): while Redis is
//! full, and while the apply stage does not take batches; it polls the consumer throughout.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapping::{one_line, Config};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::apply_stage::{ApplyHandle, ApplyResult, Work};
use super::batch::Batch;
use super::caught_up::StopWhen;
use super::dead_letter;
use super::error::ConsumeError;
use super::fencing::FenceCache;
use super::in_flight::{self, InFlight};
use super::pause::{Pauses, BACKLOG_PAUSE_AFTER};
use super::progress::SinkConsumer;
use super::recorded_types::RecordedTypes;
use super::retry::Backoff;
use super::summary::Summary;
use super::watermark::Heartbeat;
use crate::apply::{PlannedChange, RecordTime};
use crate::config::BatchSettings;
use crate::decode::{DecodeError, Decoder};
use crate::dlq::{DeadLetter, DeadLetters};
use crate::telemetry::{self, DeadLetterReason};

/// The consume stage's state.
pub(super) struct ConsumeStage<'a> {
    config: &'a Config,
    decoder: &'a Decoder,
    dead_letters: &'a DeadLetters,
    settings: BatchSettings,
    shutdown: &'a CancellationToken,
    /// Mapping index and shared topic name, by topic.
    by_topic: HashMap<String, (usize, Arc<str>)>,
    /// Source index and shared topic name, by heartbeat topic.
    heartbeat_topics: HashMap<String, (usize, Arc<str>)>,
    /// Consumed heartbeats, to the watermark watcher.
    heartbeats: mpsc::Sender<Heartbeat>,
    /// Whether Redis is full ([`crate::memory::MemoryGuard::subscribe`]).
    memory_full: watch::Receiver<bool>,
    dead_lettered: u64,
    first_record_at: Option<std::time::Instant>,
}

/// Whether to go on.
enum Step {
    Continue,
    Shutdown,
}

impl<'a> ConsumeStage<'a> {
    pub(super) fn new(
        config: &'a Config,
        decoder: &'a Decoder,
        dead_letters: &'a DeadLetters,
        settings: BatchSettings,
        shutdown: &'a CancellationToken,
        heartbeats: mpsc::Sender<Heartbeat>,
        memory_full: watch::Receiver<bool>,
    ) -> Self {
        let by_topic = config
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| (m.topic.clone(), (i, Arc::from(m.topic.as_str()))))
            .collect();
        let heartbeat_topics = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.heartbeat_topic.clone(),
                    (i, Arc::from(s.heartbeat_topic.as_str())),
                )
            })
            .collect();
        ConsumeStage {
            config,
            decoder,
            dead_letters,
            settings,
            shutdown,
            by_topic,
            heartbeat_topics,
            heartbeats,
            memory_full,
            dead_lettered: 0,
            first_record_at: None,
        }
    }

    /// The `select!` loop; returns the apply task's result too when that task ended first
    /// (otherwise it is still running).
    ///
    /// The consumer is polled all the time, also while a batch waits for room in the apply
    /// queue, so that the group keeps this member (`max.poll.interval.ms`): records keep
    /// filling the next batch, and once that one is full too, the stream rests until the
    /// waiting batch is taken or [`BACKLOG_PAUSE_AFTER`] has passed; then the partitions are
    /// paused (`pause.rs`) and polling goes on. While Redis is full they are paused as well.
    ///
    /// A partial batch is handed over as soon as the stream has no record at hand and nothing
    /// is in flight (the idle branch comes after the stream's in the biased `select!`, so
    /// records already fetched join first); while Redis is busy it gathers until linger.
    /// `handed_over` counts the records given to the apply stage and not yet applied.
    pub(super) async fn run(
        &mut self,
        consumer: &SinkConsumer,
        tx: &mpsc::Sender<Work>,
        stop: StopWhen,
        caught_up: &CancellationToken,
        apply: &mut ApplyHandle,
        handed_over: &InFlight,
    ) -> Result<(Summary, Option<ApplyResult>), ConsumeError> {
        let mut stream = consumer.stream();
        let mut batch = Batch::with_capacity(self.settings.max_records);
        // A batch for the apply stage, handed over as soon as its queue has room.
        let mut ready: Option<Batch> = None;
        let mut linger = pin!(tokio::time::sleep(Duration::ZERO));
        // When a batch that still waits for the apply stage pauses the partitions.
        let mut backlog = pin!(tokio::time::sleep(Duration::ZERO));
        let mut pauses = Pauses::default();
        let full_now = *self.memory_full.borrow_and_update();
        pauses.set_memory(consumer, full_now);
        let mut memory_open = true;
        let mut in_flight = handed_over.subscribe();
        let assignments = &consumer.context().assignments;
        let mut fences = FenceCache::new(assignments.clone());
        let mut types = RecordedTypes::new(self.config.mappings.len(), assignments.clone());
        loop {
            let batch_full = batch.is_full(&self.settings);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = caught_up.cancelled(), if stop == StopWhen::CaughtUp && batch.is_empty() && ready.is_none() => break,
                result = &mut *apply => {
                    // The apply stage only ends early on a fatal error or shutdown.
                    let result = result.unwrap_or(Err(ConsumeError::ApplyStage));
                    return Ok((self.summary(), Some(result)));
                }
                changed = self.memory_full.changed(), if memory_open => match changed {
                    Ok(()) => {
                        let full = *self.memory_full.borrow_and_update();
                        pauses.set_memory(consumer, full);
                    }
                    Err(_) => memory_open = false,
                },
                permit = tx.reserve(), if ready.is_some() => {
                    // An error means the apply stage stopped: at shutdown, or with an error
                    // that the branch above reports.
                    let Ok(permit) = permit else { break };
                    if let Some(waiting) = ready.take() {
                        handed_over.handed_over(waiting.records);
                        permit.send(Work::Batch(waiting));
                    }
                    if pauses.backlog() {
                        pauses.set_backlog(consumer, false);
                    }
                    if batch_full {
                        ready = Some(self.take(&mut batch));
                        backlog.as_mut().reset(Instant::now() + BACKLOG_PAUSE_AFTER);
                    }
                }
                () = &mut backlog, if ready.is_some() && !pauses.backlog() => {
                    pauses.set_backlog(consumer, true);
                }
                () = &mut linger, if !batch.is_empty() && ready.is_none() => {
                    ready = Some(self.take(&mut batch));
                    backlog.as_mut().reset(Instant::now() + BACKLOG_PAUSE_AFTER);
                }
                message = stream.next(), if !batch_full || pauses.is_paused() => match message {
                    None => break,
                    Some(Err(e)) => log_consumer_error(&e),
                    Some(Ok(message)) => {
                        if pauses.is_paused() {
                            pauses.arrived_while_paused(consumer);
                        }
                        // A record that would take the batch past its byte bound starts the
                        // next one (unless a batch already waits: then this one runs over by
                        // at most this record).
                        if !batch.has_room_for(record_bytes(&message), &self.settings)
                            && ready.is_none()
                        {
                            ready = Some(self.take(&mut batch));
                            backlog.as_mut().reset(Instant::now() + BACKLOG_PAUSE_AFTER);
                        }
                        if batch.is_empty() {
                            linger.as_mut().reset(Instant::now() + self.settings.linger);
                            self.first_record_at.get_or_insert_with(std::time::Instant::now);
                        }
                        if let Step::Shutdown = self.consume_record(&message, &mut batch, &mut fences, &mut types).await? {
                            break;
                        }
                        if batch.is_full(&self.settings) && ready.is_none() {
                            ready = Some(self.take(&mut batch));
                            backlog.as_mut().reset(Instant::now() + BACKLOG_PAUSE_AFTER);
                        }
                    }
                },
                () = in_flight::wait_idle(&mut in_flight), if !batch.is_empty() && ready.is_none() => {
                    ready = Some(self.take(&mut batch));
                    backlog.as_mut().reset(Instant::now() + BACKLOG_PAUSE_AFTER);
                }
            }
        }
        // Partial and waiting batches are dropped: their offsets were not stored, so they
        // are delivered again.
        Ok((self.summary(), None))
    }

    fn summary(&self) -> Summary {
        Summary {
            dead_lettered: self.dead_lettered,
            first_record_at: self.first_record_at,
            ..Summary::default()
        }
    }

    /// The batch so far; `batch` starts anew.
    fn take(&self, batch: &mut Batch) -> Batch {
        std::mem::replace(batch, Batch::with_capacity(self.settings.max_records))
    }

    /// Decodes and plans one record into `batch`, or dead-letters it.
    async fn consume_record(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
        fences: &mut FenceCache,
        types: &mut RecordedTypes,
    ) -> Result<Step, ConsumeError> {
        let topic = message.topic();
        let partition = message.partition();
        let offset = message.offset();
        if let Some((source, topic_name)) = self.heartbeat_topics.get(topic) {
            let (source, topic_name) = (*source, Arc::clone(topic_name));
            enter(batch, fences, &topic_name, partition);
            let step = self.consume_heartbeat(message, source).await?;
            batch.note_offset(&topic_name, partition, offset);
            return Ok(step);
        }
        let Some((mapping, topic_name)) = self.by_topic.get(topic) else {
            // Not subscribed by us; cannot happen with a subscription to mapped topics only.
            debug!(%topic, partition, offset, "Skipped a record of an unmapped topic.");
            return Ok(Step::Continue);
        };
        let (mapping, topic_name) = (*mapping, Arc::clone(topic_name));
        enter(batch, fences, &topic_name, partition);
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
                let step = self
                    .dead_letter(message, &decode_failure(&e), DeadLetterReason::Decode)
                    .await?;
                batch.note_offset(&topic_name, partition, offset);
                return Ok(step);
            }
        };
        let m = &self.config.mappings[mapping];
        let (op, source_ts_ms) = (decoded.change.op, decoded.change.source_ts_ms);
        match mapping::plan(m, decoded.change) {
            Ok(plan) => {
                if let Some(columns) = &decoded.columns {
                    if types.needs_recording(mapping, columns) {
                        batch.column_types.push((mapping, Arc::clone(columns)));
                    }
                }
                let change = PlannedChange {
                    mapping,
                    op,
                    plan,
                    source_ts_ms,
                    topic: topic_name.clone(),
                    partition,
                    offset,
                    record_time: RecordTime::of(message.timestamp()),
                };
                batch.push_change(change, message.key(), message.payload());
                batch.note_offset(&topic_name, partition, offset);
                Ok(Step::Continue)
            }
            Err(e) => {
                let error = format!("cannot map to {}: {}", m.name, one_line(&e));
                let step = self
                    .dead_letter(message, &error, DeadLetterReason::Plan)
                    .await?;
                batch.note_offset(&topic_name, partition, offset);
                Ok(step)
            }
        }
    }

    /// Decodes a heartbeat-table record and hands it to the watermark watcher (dropped when
    /// the watcher is behind: a later heartbeat serves as well); dead-letters it when it
    /// cannot be decoded. It maps to no rows; its offset is stored with the batch.
    async fn consume_heartbeat(
        &mut self,
        message: &BorrowedMessage<'_>,
        source: usize,
    ) -> Result<Step, ConsumeError> {
        let mut backoff = Backoff::default();
        let decoded = loop {
            match self
                .decoder
                .decode(
                    message.topic(),
                    message.key(),
                    message.payload(),
                    message.timestamp().to_millis(),
                )
                .await
            {
                Err(e) if e.is_retriable() => {
                    if !backoff
                        .wait("Decoding a heartbeat", &e, self.shutdown)
                        .await
                    {
                        return Ok(Step::Shutdown);
                    }
                }
                other => break other,
            }
        };
        match decoded {
            Ok(decoded) => {
                if let Some(heartbeat) = Heartbeat::from_change(source, &decoded.change) {
                    if self.heartbeats.try_send(heartbeat).is_err() {
                        debug!(
                            topic = message.topic(),
                            offset = message.offset(),
                            "Heartbeat dropped: the watermark watcher is busy."
                        );
                    }
                }
                Ok(Step::Continue)
            }
            Err(e) => {
                self.dead_letter(message, &decode_failure(&e), DeadLetterReason::Decode)
                    .await
            }
        }
    }

    /// Writes `message` to the dead-letter topic, retrying transient failures.
    async fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        error: &str,
        reason: DeadLetterReason,
    ) -> Result<Step, ConsumeError> {
        let letter = DeadLetter::of_message(message, error);
        if !dead_letter::send(self.dead_letters, &letter, reason, self.shutdown).await? {
            return Ok(Step::Shutdown);
        }
        self.dead_lettered += 1;
        Ok(Step::Continue)
    }
}

/// Key and value bytes of `message`, as a batch holds them.
fn record_bytes(message: &BorrowedMessage<'_>) -> usize {
    message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)
}

/// The `dlq.error` text for a record that could not be decoded.
fn decode_failure(e: &DecodeError) -> String {
    format!("cannot decode: {}", one_line(e))
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

/// Notes that the next record of `topic`/`partition` joins `batch` under the partition's
/// current assignment; records of an assignment superseded meanwhile (the partition was
/// assigned again while the batch filled) leave the batch, counted and logged.
fn enter(batch: &mut Batch, fences: &mut FenceCache, topic: &Arc<str>, partition: i32) {
    let fence = fences.fence(topic, partition);
    let dropped = batch.enter(topic, partition, fence);
    if dropped > 0 {
        metrics::counter!(telemetry::SUPERSEDED_RECORDS, "topic" => topic.to_string())
            .increment(dropped as u64);
        info!(
            %topic,
            partition,
            records = dropped,
            "Dropped records read under a superseded assignment of the partition; its new assignment reads them again."
        );
    }
}
