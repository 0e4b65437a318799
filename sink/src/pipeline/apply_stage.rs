//! The apply stage: batches from the consume stage go to Redis, one *lane* per partition.
//!
//! A batch holds records of several partitions in consumption order. The dispatcher records
//! the column types of a new value schema first, then splits the batch by partition and
//! hands each slice to that partition's lane. A lane applies its slices one after another
//! (so each partition stays in order) on its own pooled connection, and stores the
//! partition's offset once a slice is applied. Lanes run concurrently, so Redis always has
//! a pipeline to execute while another lane's reply travels back or the next slice is being
//! encoded; partitions never share a pipeline, so their relative order does not matter.
//!
//! Backpressure: each lane queues at most [`LANE_QUEUE`] slices; a full lane blocks the
//! dispatcher, which fills the queue of the consume stage (which then pauses the partitions).
//! A slice Redis refuses for lack of memory (`OOM`) tells the [`MemoryGuard`] (which pauses
//! consumption) and waits until Redis has room, then goes again: nothing is dead-lettered or
//! skipped for it, and its offsets are stored only once it is applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mapping::one_line;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedHeaders;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::batch::{Batch, Partition};
use super::dead_letter;
use super::error::ConsumeError;
use super::in_flight::InFlight;
use super::progress::{Progress, SinkConsumer};
use super::retry::Backoff;
use super::summary::Summary;
use crate::apply::{Applier, ApplyError, BatchOutcome, Fences, Watermark};
use crate::dlq::{DeadLetter, DeadLetters, Origin};
use crate::memory::MemoryGuard;
use crate::readiness::Readiness;
use crate::telemetry::applied::{now_ms, AppliedChange, ApplyMetrics};
use crate::telemetry::{self, watermark_age, DeadLetterReason};

/// Work for the apply stage.
#[derive(Debug)]
pub(super) enum Work {
    /// Apply, then store the offsets.
    Batch(Batch),
    /// Every assigned partition of these mappings' topics is at its end.
    CaughtUp(Vec<usize>),
    /// Every change this watermark of `source` covers is applied: record it.
    Watermark {
        /// The source's name.
        source: String,
        /// Its new watermark.
        watermark: Watermark,
    },
}

/// How the apply stage ends: its counts, or the first fatal error of any lane.
pub(super) type ApplyResult = Result<Summary, ConsumeError>;
/// The running apply stage.
pub(super) type ApplyHandle = tokio::task::JoinHandle<ApplyResult>;

/// Slices queued per lane.
const LANE_QUEUE: usize = 4;

/// Changes Redis may reject in a row (none applied in between) before the sink stops: one
/// bad change is dead-lettered, but a run of them means something systematic (a script
/// that does not match the sink, keys of another application) that dead-lettering the whole
/// stream would only hide.
const MAX_REJECTED_IN_A_ROW: u32 = 20;

/// What the apply stage reports to.
pub(super) struct Observers {
    /// Changes applied and batch latency.
    pub metrics: ApplyMetrics,
    /// Told whether Redis answers.
    pub readiness: Readiness,
}

impl Observers {
    /// Redis answered: it is reachable again (an idle sink learns it from the caught-up
    /// marks it records every second).
    fn redis_answered(&self) {
        self.readiness.set_redis_reachable(true);
    }

    /// Counts a Redis failure; an unanswered command makes the sink not ready.
    fn redis_failed(&self, error: &ApplyError) {
        if telemetry::redis::count(error).is_unreachable() {
            self.readiness.set_redis_reachable(false);
        }
    }
}

/// What the apply stage works with; every lane shares it.
pub(super) struct Shared {
    /// The mappings the changes were planned for.
    pub config: Arc<mapping::Config>,
    /// Stores the offsets of applied slices.
    pub consumer: Arc<SinkConsumer>,
    /// Writes Redis.
    pub applier: Arc<Applier>,
    /// Takes the changes Redis rejects for good.
    pub dead_letters: Arc<DeadLetters>,
    /// Where each partition stands.
    pub progress: Progress,
    /// Says when Redis is full, and when it has room again.
    pub memory: MemoryGuard,
    /// Stops the retries.
    pub shutdown: CancellationToken,
    /// Metrics and readiness.
    pub observers: Observers,
    /// Told when a slice's records are applied, so the consume stage knows Redis is idle.
    pub in_flight: InFlight,
}

/// Applies batches, stores their offsets, records caught-up marks; returns the counts when
/// `rx` closes (or at shutdown), or the first fatal error of any lane.
pub(super) async fn apply_stage(
    mut rx: mpsc::Receiver<Work>,
    shared: Shared,
) -> Result<Summary, ConsumeError> {
    drive_lanes(&mut rx, &Arc::new(shared)).await
}

/// Hands the batches of `rx` to one lane per partition until `rx` closes (or at shutdown);
/// the lanes' counts, or the first fatal error of any lane.
async fn drive_lanes(
    rx: &mut mpsc::Receiver<Work>,
    shared: &Arc<Shared>,
) -> Result<Summary, ConsumeError> {
    let mut lanes: HashMap<Partition, mpsc::Sender<Batch>> = HashMap::new();
    let mut running: JoinSet<Result<Summary, ConsumeError>> = JoinSet::new();
    let mut summary = Summary::default();
    loop {
        tokio::select! {
            work = rx.recv() => match work {
                None => break,
                Some(Work::Batch(batch)) => {
                    if !record_types(shared, &batch).await {
                        break;
                    }
                    for slice in batch.split_by_partition() {
                        let partition = slice.partitions[0].partition.clone();
                        let lane = lanes.entry(partition).or_insert_with(|| {
                            let (tx, rx) = mpsc::channel(LANE_QUEUE);
                            running.spawn(lane(rx, Arc::clone(shared)));
                            tx
                        });
                        if lane.send(slice).await.is_err() {
                            // The lane stopped: at shutdown or on a fatal error, reported below.
                            break;
                        }
                    }
                }
                Some(Work::CaughtUp(mappings)) => {
                    match shared.applier.record_caught_up(&mappings).await {
                        Ok(()) => shared.observers.redis_answered(),
                        Err(e) => {
                            shared.observers.redis_failed(&e);
                            // Redis is full: the guard says so once; the next mark comes in a second.
                            if shared.memory.note_failure(&e) {
                                debug!(error = %one_line(&e), "Recording the caught-up time failed.");
                            } else {
                                warn!(error = %one_line(&e), "Recording the caught-up time failed.");
                            }
                        }
                    }
                }
                Some(Work::Watermark { source, watermark }) => {
                    // Not retried: the next heartbeat brings a later one.
                    match shared.applier.record_watermark(&source, &watermark).await {
                        Ok(moved) => {
                            shared.observers.redis_answered();
                            watermark_age::recorded(&source, watermark.ts_ms);
                            debug!(%source, lsn = watermark.lsn, ts_ms = watermark.ts_ms, moved, "Recorded the source watermark.");
                        }
                        Err(e) => {
                            shared.observers.redis_failed(&e);
                            if shared.memory.note_failure(&e) {
                                debug!(%source, error = %one_line(&e), "Recording the source watermark failed.");
                            } else {
                                warn!(%source, error = %one_line(&e), "Recording the source watermark failed.");
                            }
                        }
                    }
                }
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                // A lane ends early only at shutdown or on a fatal error.
                merge(&mut summary, done)?;
                if shared.shutdown.is_cancelled() {
                    break;
                }
            }
        }
    }
    drop(lanes);
    while let Some(done) = running.join_next().await {
        merge(&mut summary, done)?;
    }
    Ok(summary)
}

fn merge(
    summary: &mut Summary,
    done: Result<Result<Summary, ConsumeError>, tokio::task::JoinError>,
) -> Result<(), ConsumeError> {
    let lane = done.map_err(|_| ConsumeError::ApplyStage)??;
    summary.records += lane.records;
    summary.changes += lane.changes;
    summary.skipped += lane.skipped;
    summary.dead_lettered += lane.dead_lettered;
    summary.batches += lane.batches;
    summary.last_applied_at = summary.last_applied_at.max(lane.last_applied_at);
    summary.bookkeeping_lost |= lane.bookkeeping_lost;
    Ok(())
}

/// Records the column types of new value schemas before their records; `false` at shutdown.
async fn record_types(shared: &Shared, batch: &Batch) -> bool {
    for (mapping, columns) in &batch.column_types {
        let mut backoff = Backoff::default();
        while let Err(e) = shared.applier.record_column_types(*mapping, columns).await {
            shared.observers.redis_failed(&e);
            if shared.memory.note_failure(&e) && !wait_for_room(shared).await {
                return false;
            }
            if !backoff
                .wait("Recording column types", &e, &shared.shutdown)
                .await
            {
                return false;
            }
        }
    }
    true
}

/// One partition: applies its slices in order and stores its offset after each.
///
/// A slice that the writers' marker guard refuses although it was read under an assignment
/// of the partition that is no longer this process's current one (a rebalance since: the
/// partition went elsewhere, or came back under a newer assignment) is dropped, and so are
/// the later slices of that assignment without asking Redis: nothing is stored for them, and
/// the partition's current owner applies their records from where its assignment starts. The
/// pipeline goes on (a restart would make the consumer leave and rejoin the group: another
/// rebalance, and more refusals). A refused slice of the current assignment stops the
/// pipeline, to start again from what Redis holds ([`apply_with_retries`]).
async fn lane(mut rx: mpsc::Receiver<Batch>, shared: Arc<Shared>) -> Result<Summary, ConsumeError> {
    let mut summary = Summary::default();
    let mut rejected_in_a_row = 0;
    // The fences of the assignment the writers found superseded.
    let mut superseded: Option<Fences> = None;
    while let Some(mut slice) = rx.recv().await {
        let fences = slice.fences();
        if superseded.as_ref() == Some(&fences) {
            drop_superseded(&shared, &slice, None);
            continue;
        }
        let outcome = match apply_with_retries(
            &shared,
            &mut slice,
            &fences,
            &mut summary,
            &mut rejected_in_a_row,
        )
        .await?
        {
            None => return Ok(summary),
            Some(Landed::Applied(outcome)) => outcome,
            Some(Landed::Superseded(error)) => {
                drop_superseded(&shared, &slice, Some(&error));
                superseded = Some(fences);
                continue;
            }
        };
        for mark in &slice.partitions {
            let (topic, partition) = &mark.partition;
            // librdkafka stores `last + 1`: the next record to read.
            if let Err(e) = shared.consumer.store_offset(topic, *partition, mark.last) {
                // The partition was revoked meanwhile; its new owner re-applies.
                debug!(%topic, partition, offset = mark.last, error = %e, "Offset not stored.");
            }
            shared.progress.applied(topic, *partition, mark.last + 1);
            debug!(
                %topic,
                partition,
                offset = mark.last,
                records = slice.records,
                applied = outcome.applied,
                skipped = outcome.skipped,
                "Applied batch."
            );
        }
        shared.in_flight.applied(slice.records);
        summary.records += slice.records as u64;
        summary.changes += slice.changes.len() as u64;
        summary.skipped += outcome.skipped as u64;
        summary.batches += 1;
        summary.last_applied_at = Some(std::time::Instant::now());
    }
    Ok(summary)
}

/// Drops `slice`, read under a superseded assignment of its partition (`refusal`: the
/// writer's, for its first slice; later ones of the same assignment are not sent).
fn drop_superseded(shared: &Shared, slice: &Batch, refusal: Option<&ApplyError>) {
    shared.in_flight.applied(slice.records);
    let Some(mark) = slice.partitions.first() else {
        return;
    };
    let (topic, partition) = &mark.partition;
    metrics::counter!(telemetry::SUPERSEDED_RECORDS, "topic" => topic.to_string())
        .increment(slice.records as u64);
    match refusal {
        Some(error) => warn!(
            %topic,
            partition,
            records = slice.records,
            last = mark.last,
            error = %one_line(error),
            "Dropping the batches read under a superseded assignment of the partition; its current assignment applies them."
        ),
        None => {
            debug!(%topic, partition, records = slice.records, last = mark.last, "Dropped a batch read under a superseded assignment.")
        }
    }
}

/// How a slice ended, short of shutdown.
enum Landed {
    /// Applied (some changes perhaps dead-lettered).
    Applied(BatchOutcome),
    /// Refused: read under an assignment of the partition that another one superseded.
    Superseded(ApplyError),
}

/// Applies `batch`, read under `fences`, retrying transient failures; a change Redis rejects
/// for good is dead-lettered and the rest of the batch sent again (harmless: every change is
/// idempotent). `None` at shutdown.
async fn apply_with_retries(
    shared: &Shared,
    batch: &mut Batch,
    fences: &Fences,
    summary: &mut Summary,
    rejected_in_a_row: &mut u32,
) -> Result<Option<Landed>, ConsumeError> {
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let error = match shared.applier.apply_fenced(&batch.changes, fences).await {
            Ok(outcome) => {
                let observers = &shared.observers;
                observers.redis_answered();
                observers.metrics.slice_applied(
                    started.elapsed(),
                    now_ms(),
                    batch.changes.iter().map(|c| AppliedChange {
                        mapping: c.mapping,
                        op: c.op,
                        record_time: c.record_time,
                    }),
                );
                if outcome.applied + outcome.skipped > 0 {
                    *rejected_in_a_row = 0;
                }
                return Ok(Some(Landed::Applied(outcome)));
            }
            Err(e) => e,
        };
        shared.observers.redis_failed(&error);
        if let ApplyError::BookkeepingLost { .. } | ApplyError::Superseded { .. } = error {
            // The writers' marker guard (ARCHITECTURE.md, *Self-healing*). Never retried: a
            // later assignment may mark the partition again, and a retried batch would then
            // land ahead of its replay or behind it.
            if !read_under_current_assignment(shared, batch) {
                // Another assignment took over since the batch was read (elsewhere, or a newer
                // one of this process): it applies these records; this pipeline goes on.
                return Ok(Some(Landed::Superseded(error)));
            }
            if batch.is_unfenced() {
                // The current assignment could not mark its partitions (Redis or the broker
                // did not answer): the watcher starts the pipeline again as soon as Redis
                // answers and has room. Nothing read under this assignment may land meanwhile.
                // A rebalance may come first and place the partition (marking it, which
                // clears what the watcher looks for) or take it away: the batch is then
                // superseded, and waiting on would hold the lane, and every partition behind
                // it, for good.
                debug!(error = %one_line(&error), "Waiting for the pipeline to start again: its assignment holds no fence.");
                return Ok(superseded_while_unfenced(shared, batch)
                    .await
                    .then_some(Landed::Superseded(error)));
            }
            // This process's current assignment: Redis lost the partition's bookkeeping, or
            // another assignment marked it while this process still takes it for its own (it
            // was expelled from the group without hearing of it yet). Dropped with every batch
            // queued behind it (no offset stored), and the pipeline starts again from what
            // Redis holds, with a new assignment.
            warn!(
                error = %one_line(&error),
                "Redis lost this partition's bookkeeping; dropping the batches in flight and starting the pipeline again."
            );
            summary.bookkeeping_lost = true;
            shared.shutdown.cancel();
            return Ok(None);
        }
        if error.is_retriable() {
            if shared.memory.note_failure(&error) && !wait_for_room(shared).await {
                return Ok(None);
            }
            if !backoff
                .wait("Applying a batch to redis", &error, &shared.shutdown)
                .await
            {
                return Ok(None);
            }
            continue;
        }
        let Some(i) = culprit(&error, batch) else {
            if let Some(key) = error.key_of_another_type() {
                // The rest of the exclusive batch was applied (the pipeline stops or falls
                // back to the script, which finds these changes applied): the changes that
                // write the refused key, as their row or a relation's parent, are
                // dead-lettered now, or never.
                let mappings = &shared.config.mappings;
                for i in (0..batch.changes.len()).filter(|&i| {
                    let change = &batch.changes[i];
                    change.plan.writes_key(&mappings[change.mapping], key)
                }) {
                    if !dead_letter_change(shared, batch, i, &error).await? {
                        return Ok(None);
                    }
                    summary.dead_lettered += 1;
                }
            }
            return Err(ConsumeError::Apply {
                changes: batch.changes.len(),
                source: error,
            });
        };
        // The changes before the culprit were applied.
        if i > 0 {
            *rejected_in_a_row = 0;
        }
        *rejected_in_a_row += 1;
        if *rejected_in_a_row > MAX_REJECTED_IN_A_ROW {
            return Err(ConsumeError::Rejected {
                count: *rejected_in_a_row,
                changes: batch.changes.len(),
                source: error,
            });
        }
        if !dead_letter_change(shared, batch, i, &error).await? {
            return Ok(None);
        }
        summary.dead_lettered += 1;
        batch.remove_change(i);
    }
}

/// Whether `batch` was read under what this process still takes for its partitions' current
/// assignment (the same fence, or none known for either).
fn read_under_current_assignment(shared: &Shared, batch: &Batch) -> bool {
    let assignments = &shared.consumer.context().assignments;
    batch.fences.iter().all(|((topic, partition), fence)| {
        assignments.is_current(topic, *partition, fence.as_ref())
    })
}

/// How often a batch of an unmarked assignment checks whether a rebalance superseded it.
const UNFENCED_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Waits until the pipeline stops (`false`) or a rebalance supersedes the assignment
/// `batch` was read under (`true`).
async fn superseded_while_unfenced(shared: &Shared, batch: &Batch) -> bool {
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return false,
            () = tokio::time::sleep(UNFENCED_CHECK_EVERY) => {}
        }
        if !read_under_current_assignment(shared, batch) {
            return true;
        }
    }
}

/// Waits until Redis has room again after it refused a write for lack of memory (the
/// consume stage has paused the partitions meanwhile); `false` at shutdown.
async fn wait_for_room(shared: &Shared) -> bool {
    tokio::select! {
        biased;
        () = shared.shutdown.cancelled() => false,
        () = shared.memory.has_room() => true,
    }
}

/// The index of the change `error` is about.
fn culprit(error: &ApplyError, batch: &Batch) -> Option<usize> {
    let (topic, partition, offset) = error.location()?;
    batch
        .changes
        .iter()
        .position(|c| c.offset == offset && c.partition == partition && &*c.topic == topic)
}

/// Writes change `i` of `batch` to the dead-letter topic; `false` at shutdown.
async fn dead_letter_change(
    shared: &Shared,
    batch: &Batch,
    i: usize,
    error: &ApplyError,
) -> Result<bool, ConsumeError> {
    let text = format!("redis rejected the change: {}", one_line(error));
    let change = &batch.changes[i];
    let (key, value) = batch.raw.get(i);
    let letter = DeadLetter {
        origin: Origin {
            topic: &change.topic,
            partition: change.partition,
            offset: change.offset,
        },
        key,
        value,
        timestamp_ms: None,
        headers: OwnedHeaders::new(),
        error: &text,
    };
    dead_letter::send(
        &shared.dead_letters,
        &letter,
        DeadLetterReason::Apply,
        &shared.shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    //! A lane against the Redis of `REDIS_URL` (tests/stack), with a guarded shared writer and
    //! slices of one partition read under two assignments.

    use mapping::change::{Change, FieldValue};
    use mapping::{layout, Op};
    use rdkafka::{ClientConfig, TopicPartitionList};
    use redis::AsyncCommands;

    use super::*;
    use crate::apply::marker;
    use crate::config::MemorySettings;
    use crate::connection::{redis_client, redis_pool};
    use crate::pipeline::progress::SinkContext;
    use crate::pipeline::self_heal::{server_run_id, SelfHeal};

    /// A lane's world: one mapping (topic `{tag}`, rows `{tag}:{id}`) in the test Redis.
    struct World {
        tag: String,
        config: mapping::Config,
        shared: Arc<Shared>,
        pool: deadpool_redis::Pool,
        run: String,
    }

    impl World {
        async fn new() -> World {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let tag = format!("lane{:08x}", rand::random::<u32>());
            let yaml = format!(
                "mappings:\n  - name: {tag}\n    topic: {tag}\n    key: \"{tag}:{{id}}\"\n"
            );
            let mut config =
                mapping::load_config_str(&yaml, "connectors.yaml", &Default::default())
                    .unwrap_or_else(|e| panic!("{e}"));
            config.redis = mapping::RedisConfig::from_url(url.as_str());
            let pool = redis_pool(&config.redis).expect("pool");
            let mut conn = pool.get().await.unwrap_or_else(|e| {
                panic!("redis at {url} is unreachable ({e}); start it with tests/stack/redis.sh")
            });
            let run = server_run_id(&mut conn).await.expect("INFO server");
            let readiness = Readiness::new();
            let settings = MemorySettings::from_config(&config);
            let memory =
                crate::memory::start(&config.redis, &config.mappings, settings, &readiness)
                    .await
                    .expect("memory guard");
            // Never connects: the lane only stores offsets (refused: nothing is assigned).
            let mut kafka = ClientConfig::new();
            kafka
                .set("bootstrap.servers", "127.0.0.1:1")
                .set("group.id", &tag)
                .set("enable.auto.offset.store", "false");
            let heal = SelfHeal::new(redis_client(&config.redis).expect("client"));
            let consumer: SinkConsumer = kafka
                .create_with_context(SinkContext::new(Arc::new(heal)))
                .expect("consumer");
            let shared = Shared {
                config: Arc::new(config.clone()),
                progress: consumer.context().progress.clone(),
                consumer: Arc::new(consumer),
                applier: Arc::new(Applier::new(pool.clone(), &config).with_marker_guard()),
                dead_letters: Arc::new(DeadLetters::new(&kafka, "dlq").expect("dead letters")),
                memory,
                shutdown: CancellationToken::new(),
                observers: Observers {
                    metrics: ApplyMetrics::new([tag.as_str()]),
                    readiness,
                },
                in_flight: InFlight::default(),
            };
            World {
                tag,
                config,
                shared: Arc::new(shared),
                pool,
                run,
            }
        }

        /// This process's current assignment of partition 0 is the one marked `marker`
        /// (`None`: it could not mark it).
        fn assigned(&self, marker: Option<&str>) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.tag, 0);
            self.shared
                .consumer
                .context()
                .assignments
                .assigned(&tpl, marker);
        }

        /// What Redis holds as partition 0's marker: `marker` (an assignment marked it).
        async fn mark(&self, marker: &str) {
            let field = layout::offsets_field(&self.tag, 0);
            let mut conn = self.pool.get().await.expect("conn");
            let _: () = conn
                .hset(layout::OFFSETS_RUN_KEY, &field, marker)
                .await
                .expect("HSET");
        }

        /// A slice of partition 0 upserting row `id` at `offset`, read under `fence`.
        fn slice(&self, id: i64, offset: i64, fence: Option<&str>) -> Batch {
            let change = Change {
                op: Op::Create,
                key: vec![("id".into(), FieldValue::Int(id))],
                before: None,
                after: Some(vec![("id".into(), FieldValue::Int(id))]),
                position: Some(100 + offset),
                source_ts_ms: None,
            };
            let topic: Arc<str> = Arc::from(self.tag.as_str());
            let plan = mapping::plan(&self.config.mappings[0], change).expect("plan");
            let mut batch = Batch::default();
            batch.enter(&topic, 0, fence.map(Arc::from));
            batch.push_change(
                crate::apply::PlannedChange {
                    mapping: 0,
                    op: Op::Create,
                    plan,
                    source_ts_ms: None,
                    topic: Arc::clone(&topic),
                    partition: 0,
                    offset,
                    record_time: None,
                },
                None,
                None,
            );
            batch.note_offset(&topic, 0, offset);
            batch
        }

        /// Runs one lane over `slices` to its end.
        async fn lane(&self, slices: Vec<Batch>) -> Summary {
            self.spawn_lane(slices)
                .await
                .expect("lane task")
                .expect("lane")
        }

        /// Starts one lane over `slices`.
        fn spawn_lane(&self, slices: Vec<Batch>) -> tokio::task::JoinHandle<ApplyResult> {
            let (tx, rx) = mpsc::channel(slices.len().max(1));
            for slice in slices {
                self.shared.in_flight.handed_over(slice.records);
                tx.try_send(slice).expect("queue");
            }
            tokio::spawn(lane(rx, Arc::clone(&self.shared)))
        }

        async fn rows(&self) -> Vec<String> {
            let mut conn = self.pool.get().await.expect("conn");
            let mut rows: Vec<String> = conn.keys(format!("{}:*", self.tag)).await.expect("KEYS");
            rows.sort();
            rows
        }

        async fn clean(&self) {
            let mut conn = self.pool.get().await.expect("conn");
            let mut keys: Vec<String> = conn.keys(format!("*{}*", self.tag)).await.expect("KEYS");
            keys.retain(|k| !k.starts_with("sink:offsets"));
            if !keys.is_empty() {
                let _: () = conn.del(keys).await.expect("DEL");
            }
            let field = layout::offsets_field(&self.tag, 0);
            let _: () = conn
                .hdel(layout::OFFSETS_RUN_KEY, &field)
                .await
                .expect("HDEL");
            let _: () = conn.hdel(layout::OFFSETS_KEY, &field).await.expect("HDEL");
        }
    }

    /// The slices a lane holds from an assignment that a rebalance replaced are dropped, the
    /// later ones without asking Redis, and the lane goes on with the new assignment's: no
    /// restart (which would rejoin the group and cause yet another rebalance).
    #[tokio::test]
    async fn a_superseded_assignment_is_dropped_without_a_restart() {
        let w = World::new().await;
        let old = marker(&w.run, "00000000000000a1");
        let new = marker(&w.run, "00000000000000a2");
        w.mark(&new).await;
        w.assigned(Some(&new));
        let summary = w
            .lane(vec![
                w.slice(1, 10, Some(&old)),
                w.slice(2, 11, Some(&old)),
                w.slice(3, 5, Some(&new)),
            ])
            .await;
        assert!(!summary.bookkeeping_lost, "{summary:?}");
        assert!(!w.shared.shutdown.is_cancelled(), "the pipeline must go on");
        assert_eq!((summary.batches, summary.records), (1, 1), "{summary:?}");
        assert_eq!(w.rows().await, vec![format!("{}:3", w.tag)]);
        assert_eq!(w.shared.progress.next(&w.tag, 0), Some(6));
        assert_eq!(
            *w.shared.in_flight.subscribe().borrow(),
            0,
            "dropped records are no longer in flight"
        );
        w.clean().await;
    }

    /// A slice of what this process still takes for its current assignment, refused because
    /// another assignment marked the partition (this process was expelled from the group
    /// without hearing of it yet): the pipeline stops, to start again with a new assignment.
    #[tokio::test]
    async fn a_superseded_current_assignment_restarts_the_pipeline() {
        let w = World::new().await;
        let ours = marker(&w.run, "00000000000000b1");
        w.mark(&marker(&w.run, "00000000000000b2")).await;
        w.assigned(Some(&ours));
        let summary = w
            .lane(vec![
                w.slice(1, 10, Some(&ours)),
                w.slice(2, 11, Some(&ours)),
            ])
            .await;
        assert!(summary.bookkeeping_lost, "{summary:?}");
        assert!(w.shared.shutdown.is_cancelled());
        assert_eq!(summary.records, 0);
        assert!(w.rows().await.is_empty());
        w.clean().await;
    }

    /// A slice of this process's current assignment, which could not mark its partitions
    /// (Redis or the broker did not answer at assignment): refused, and held until the
    /// pipeline stops (the watcher starts it again once Redis answers and has room), neither
    /// dropped nor restarting the pipeline by itself (a restart per refusal would loop while
    /// Redis is full).
    #[tokio::test]
    async fn an_unfenced_assignment_waits_for_the_watcher() {
        let w = World::new().await;
        w.mark(&marker(&w.run, "00000000000000c1")).await;
        w.assigned(None);
        let running = w.spawn_lane(vec![w.slice(1, 10, None)]);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!running.is_finished(), "the lane must hold the slice");
        assert!(!w.shared.shutdown.is_cancelled(), "nor stop the pipeline");
        w.shared.shutdown.cancel();
        let summary = running.await.expect("lane task").expect("lane");
        assert!(!summary.bookkeeping_lost, "{summary:?}");
        assert_eq!(summary.records, 0);
        assert!(w.rows().await.is_empty());
        w.clean().await;
    }

    /// A slice held like that, when a rebalance places the partition again before the
    /// watcher saw the unmarked assignment (the new placement clears what it looks for): the
    /// slice is superseded and dropped, and the lane goes on with the new assignment's. Seen
    /// in the fault suite (run fd21fa4): a sink held its lane for good, and its partitions
    /// stayed paused, 10,129 records behind.
    #[tokio::test]
    async fn an_unfenced_slice_is_dropped_once_a_rebalance_supersedes_it() {
        for placed_again in [true, false] {
            let w = World::new().await;
            let new = marker(&w.run, "00000000000000d2");
            w.mark(&new).await;
            w.assigned(None);
            let running = w.spawn_lane(vec![w.slice(1, 10, None), w.slice(2, 11, None)]);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(!running.is_finished(), "held while the assignment lasts");
            if placed_again {
                w.assigned(Some(&new));
            } else {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&w.tag, 0);
                w.shared.consumer.context().assignments.revoked(&tpl);
            }
            let summary = tokio::time::timeout(std::time::Duration::from_secs(5), running)
                .await
                .expect("the lane let the superseded slices go")
                .expect("lane task")
                .expect("lane");
            assert!(!summary.bookkeeping_lost, "{summary:?}");
            assert!(!w.shared.shutdown.is_cancelled(), "no restart needed");
            assert_eq!(summary.records, 0, "{summary:?}");
            assert!(w.rows().await.is_empty());
            w.clean().await;
        }
    }
}
