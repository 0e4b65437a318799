//! `sink rebuild`: replays every mapped topic from the beginning into a staging Redis
//! database, then swaps it with the live one in one atomic step.
//!
//! # How readers find the current state
//!
//! Readers (agent-cli) read the database that `redis.url` names (the *live* database,
//! default 0) under the key names of `connectors.yaml`; a rebuild never changes that. It
//! builds the new state in a *staging* database (`--staging-db N`, default live + 1) with the
//! same decode/plan/apply pipeline as `sink run`, and hands it over with `SWAPDB live
//! staging`, which Redis performs atomically: every client connected to the live database
//! sees the new keyspace from its next command on. Before the swap readers get the complete
//! old state, after it the complete new one; never a mix, never a half-built one (a reader
//! that reads a row and its index in one `MULTI` or script sees one state or the other).
//!
//! # Steps
//!
//! 1. Health checks; connect to both databases; refuse when they are the same one.
//! 2. Take the lock `sink:rebuild:lock` in the live database (one rebuild at a time; it
//!    expires 10 s after a killed rebuild stopped refreshing it).
//! 3. Memory check (see below), then `FLUSHDB` the staging database: a rerun starts clean.
//! 4. Replay: a consumer with a throwaway group id (nothing resumes from it) is assigned
//!    every partition of every mapped topic from `Offset::Beginning`; the high watermarks
//!    read now are the end of the replay. [`consume::consume`] applies the records to the
//!    staging database (with [`Applier::owning`]: the bookkeeping in this process, plain
//!    pipelined writes) until every partition is applied up to its watermark (a tail of
//!    offsets that holds no records, such as compacted-away records or transaction markers,
//!    counts once the fetch position passed it and nothing moved for 3 s).
//! 5. Handover: a `sink run` may have applied records to the live database meanwhile. Its
//!    change scripts record `sink:offsets` (`{topic}/{partition}` -> last applied offset) in
//!    the same atomic step as the change, so the rebuild keeps consuming until its own
//!    offsets reach the live ones, then runs `rebuild/handover.lua`, which atomically
//!    (SELECT live, read `sink:offsets`; SELECT staging, compare) either swaps the databases
//!    or reports the partitions still behind (the rebuild consumes more and tries again).
//!    Since no change script can run between the check and the `SWAPDB`, the live sink's
//!    next change lands on a state that already holds everything it had applied; the
//!    records it replays from there are either new or no-ops under the position guards.
//!    Just before the swap the script writes `sink:rebuild` (start and finish time, config
//!    fingerprint, records per topic) into the new state and deletes the lock.
//! 6. The old state, now in the staging database, is freed with `FLUSHDB ASYNC`.
//!
//! # `sink run` during a rebuild
//!
//! Allowed and safe with the same `connectors.yaml`: the live sink keeps applying to the
//! live database (readers see fresh data throughout); the rebuild never writes there except
//! its lock. After the swap, the live sink continues from its own consumer position; the
//! records between that position and where the rebuild stopped were already applied to the
//! new state and are re-applied once more in order (as after a sink restart: transiently a
//! row deleted in that window can reappear until its delete is re-applied a moment later).
//! After a *mapping change*, stop `sink run`, rebuild with the new file, then start `sink
//! run` with it: a live sink running the old mapping would keep writing the old layout.
//!
//! # Memory
//!
//! Both states live in one Redis until the swap. The new state is estimated as the live
//! database's share of `used_memory` (by key count; all of it when the live database is the
//! only one), minus what flushing the staging database frees. When `maxmemory` is set and
//! `used_memory + estimate` exceeds it, the rebuild refuses (`--force` only warns: with an
//! evicting `maxmemory-policy`, Redis would then evict live keys; with `noeviction` the
//! replay fails with OOM and the live state stays untouched).
//!
//! # Interrupted
//!
//! Killed or failed before the swap: the live database was never touched (apart from the
//! lock, which expires) and keeps serving the old state; the staging database holds a
//! partial state nobody reads, which the next rebuild flushes first. SIGINT/SIGTERM stop the
//! replay, release the lock and exit 1.
//!
//! # Afterwards
//!
//! The new state holds exactly what the current log and `connectors.yaml` produce: rows
//! deleted in the source (and compacted away), stale index entries, relation members of
//! deleted rows and keys only an older mapping produced are gone, because nothing of the old
//! state is copied.

pub mod display;
pub mod partitions;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mapping::{one_line, redact_url};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::Applier;
use crate::config::SinkConfig;
use crate::connection::{redis_pool, PoolError};
use crate::consume::offsets::OffsetsClient;
use crate::consume::progress::SinkContext;
use crate::consume::{self, ConsumeError, Pipeline, SinkConsumer, StopWhen, Summary};
use crate::decode::Decoder;
use crate::dlq::{DeadLetters, DlqError};
use crate::health::{self, HealthError};
use crate::registry::{Registry, RegistryError};
use display::Display;
use partitions::{PartitionState, PartitionTarget, Tracker};
use target::{Handover, HandoverOutcome, MemoryEstimate, Target, TargetError, LOCK_TTL};

/// How often the replay's progress is checked.
const TICK: Duration = Duration::from_millis(100);
/// Timeout of each broker request.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a rebuild may do besides the configuration.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Staging database (default: live + 1).
    pub staging_db: Option<i64>,
    /// Rebuild even when Redis's maxmemory cannot hold both states (warn instead of
    /// refusing), and hand over even when the live state records offsets beyond the end of
    /// the log (`--force`).
    pub force: bool,
    /// Give up when the live sink stays ahead this long after the replay.
    pub handover_timeout: Duration,
    /// Progress bars on a terminal.
    pub progress: bool,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            staging_db: None,
            force: false,
            handover_timeout: Duration::from_secs(300),
            progress: false,
        }
    }
}

/// Why a rebuild failed; in every case the live database still serves the old state.
#[derive(Debug, Error)]
pub enum RebuildError {
    /// A start-up check failed.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The registry client could not be built.
    #[error("invalid schema registry settings")]
    Registry(#[source] RegistryError),
    /// Redis failed or refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The staging connection pool could not be set up.
    #[error(transparent)]
    RedisPool(#[from] PoolError),
    /// The dead-letter producer could not be created.
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
    /// Kafka failed.
    #[error("kafka: {what}")]
    Kafka {
        /// What was being done.
        what: &'static str,
        /// What librdkafka reported.
        #[source]
        source: KafkaError,
    },
    /// Two states do not fit under maxmemory.
    #[error("not enough redis memory for the old and the new state side by side ({0}); free memory, raise maxmemory or pass --force")]
    Memory(MemoryEstimate),
    /// The replay failed.
    #[error("the replay failed")]
    Consume(#[source] ConsumeError),
    /// The replay stopped without an error before it was done.
    #[error("the replay stopped before reaching the end of the log")]
    Stopped,
    /// SIGINT/SIGTERM.
    #[error("interrupted; the live state is unchanged (rerun to start over)")]
    Interrupted,
    /// Another process took the lock.
    #[error("lost the rebuild lock (now held by {0}); another rebuild may be running")]
    LockLost(String),
    /// The live sink stayed ahead.
    #[error("the live sink stayed ahead of the rebuild for {waited:?}: {lagging}")]
    HandoverTimeout {
        /// How long the rebuild waited.
        waited: Duration,
        /// The partitions behind, `field live>staging`.
        lagging: String,
    },
    /// The live state records applied offsets the log does not have.
    #[error("the live state records offset {live} for {field} but the log ends at {high} (topic recreated or truncated?); pass --force to hand over anyway")]
    LiveAhead {
        /// `{topic}/{partition}`.
        field: String,
        /// Offset in the live `sink:offsets`.
        live: i64,
        /// Current high watermark.
        high: i64,
    },
    /// The live sink consumes partitions that did not exist when the rebuild started.
    #[error("partitions were added during the rebuild ({0}); rerun it")]
    NewPartitions(String),
}

impl RebuildError {
    /// Whether the command line asked for something impossible (exit code 2 rather than 1):
    /// the staging database is the live one.
    pub fn is_usage(&self) -> bool {
        matches!(self, RebuildError::Target(TargetError::SameDb(_)))
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The database that now serves the new state.
    pub live_db: i64,
    /// The database that held the new state while it was built (now being freed).
    pub staging_db: i64,
    /// Records replayed per topic (applied, skipped or dead-lettered) up to the start-time
    /// end of the log.
    pub per_topic: BTreeMap<String, u64>,
    /// Time from start until the replay reached the end of the log.
    pub replay: Duration,
    /// Time from start until the swap.
    pub total: Duration,
    /// Time from start until the replay had stopped and the old state was being freed.
    pub finished: Duration,
    /// Counts of the consume loop (including records consumed during the handover).
    pub summary: Summary,
    /// Handover attempts (1 when no live sink was ahead).
    pub attempts: u32,
}

impl Report {
    /// Records replayed in total.
    pub fn events(&self) -> u64 {
        self.per_topic.values().sum()
    }

    /// Records per second of the replay.
    pub fn rate(&self) -> f64 {
        self.events() as f64 / self.replay.as_secs_f64().max(0.001)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rebuild: db {} now serves the rebuilt state (built in db {}, where the old state is being freed)",
            self.live_db, self.staging_db
        )?;
        for (topic, n) in &self.per_topic {
            writeln!(f, "  {topic}: {n} events")?;
        }
        writeln!(
            f,
            "replayed {} events in {:.2} s ({:.0} events/s); swapped after {:.2} s ({} handover attempt(s)); {} dead-lettered",
            self.events(),
            self.replay.as_secs_f64(),
            self.rate(),
            self.total.as_secs_f64(),
            self.attempts,
            self.summary.dead_lettered,
        )
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// FNV-1a of the validated mappings: equal for equal mappings, whatever the connection
/// settings.
pub fn fingerprint(config: &mapping::Config) -> String {
    let text = format!("{:?}", config.mappings);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Rebuilds the live database of `cfg.config.redis.url` from the log (see the module docs).
pub async fn rebuild(
    cfg: &SinkConfig,
    options: &RebuildOptions,
    shutdown: CancellationToken,
) -> Result<Report, RebuildError> {
    let config = &cfg.config;
    let registry =
        Arc::new(Registry::new(&config.schema_registry.url).map_err(RebuildError::Registry)?);
    let mut consumer_config = cfg.consumer_config();
    let unique = format!("{}-{}", std::process::id(), now_ms());
    consumer_config
        .set(
            "group.id",
            format!("{}-rebuild-{unique}", config.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let topics: Vec<String> = config.mappings.iter().map(|m| m.topic.clone()).collect();
    health::check_all(
        &config.redis.url,
        &registry,
        &consumer_config,
        &topics,
        health::DEFAULT_TIMEOUT,
    )
    .await?;

    let target = Target::connect(&config.redis.url, options.staging_db).await?;
    let token = format!("rebuild-{unique}");
    target.lock(&token).await?;
    info!(
        live_db = target.live_db,
        staging_db = target.staging_db,
        redis = %redact_url(&config.redis.url),
        "Rebuild lock taken."
    );

    let lock_lost = CancellationToken::new();
    let refresher = tokio::spawn(refresh_lock(
        target.clone(),
        token.clone(),
        lock_lost.clone(),
    ));
    let ctx = Context {
        cfg,
        options,
        target: &target,
        token: &token,
        registry,
        lock_lost: &lock_lost,
    };
    let result = ctx.run(consumer_config, topics, shutdown).await;
    refresher.abort();
    if result.is_err() {
        if let Err(e) = target.unlock(&token).await {
            warn!(error = %one_line(&e), "Releasing the rebuild lock failed; it expires by itself.");
        }
    }
    result
}

/// Keeps the lock alive; cancels `lost` when another process holds it.
async fn refresh_lock(target: Target, token: String, lost: CancellationToken) {
    let mut ticks = tokio::time::interval(LOCK_TTL / 4);
    loop {
        ticks.tick().await;
        match target.refresh_lock(&token).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(e) => warn!(error = %one_line(&e), "Refreshing the rebuild lock failed."),
        }
    }
}

struct Context<'a> {
    cfg: &'a SinkConfig,
    options: &'a RebuildOptions,
    target: &'a Target,
    token: &'a str,
    registry: Arc<Registry>,
    lock_lost: &'a CancellationToken,
}

/// The replay's consumer loop; `None` once [`Context::wait`] has seen it end (a finished
/// `JoinHandle` must not be awaited again).
type ConsumeTask = Option<tokio::task::JoinHandle<Result<Summary, ConsumeError>>>;

impl Context<'_> {
    async fn run(
        &self,
        consumer_config: rdkafka::ClientConfig,
        topics: Vec<String>,
        shutdown: CancellationToken,
    ) -> Result<Report, RebuildError> {
        let started_ms = now_ms();
        let t0 = Instant::now();
        let config = &self.cfg.config;
        let target = self.target;

        let estimate = target
            .memory()
            .await?
            .estimate(target.live_db, target.staging_db);
        if estimate.fits() {
            info!(%estimate, "Memory check passed.");
        } else if self.options.force {
            warn!(%estimate, evicting_policy = estimate.evicts, "Both states may not fit under maxmemory; going on (--force).");
        } else {
            return Err(RebuildError::Memory(estimate));
        }
        target.flush_staging().await?;

        let consumer: SinkConsumer = consumer_config
            .create_with_context(SinkContext::default())
            .map_err(|source| RebuildError::Kafka {
                what: "cannot create the consumer",
                source,
            })?;
        let consumer = Arc::new(consumer);
        let offsets = Arc::new(OffsetsClient::new(&consumer_config).map_err(|source| {
            RebuildError::Kafka {
                what: "cannot create the offsets client",
                source,
            }
        })?);
        let targets = partitions::discover(Arc::clone(&consumer), topics.clone(), KAFKA_TIMEOUT)
            .await
            .map_err(|source| RebuildError::Kafka {
                what: "reading partitions and watermarks",
                source,
            })?;
        partitions::assign_from_beginning(&consumer, &targets).map_err(|source| {
            RebuildError::Kafka {
                what: "assigning partitions",
                source,
            }
        })?;

        let pool = redis_pool(&target.staging_url)?;
        let pipeline = Pipeline {
            config: Arc::clone(config),
            decoder: Arc::new(Decoder::new(Arc::clone(&self.registry))),
            applier: Applier::owning(pool, config),
            dead_letters: Arc::new(DeadLetters::new(
                &self.cfg.producer_config(),
                &config.kafka.dead_letter_topic,
            )?),
            batch: self.cfg.batch,
        };
        let stop = shutdown.child_token();
        let mut task: ConsumeTask = Some(tokio::spawn(consume::consume(
            Arc::clone(&consumer),
            Arc::clone(&offsets),
            pipeline,
            StopWhen::Shutdown,
            stop.clone(),
        )));

        let mut tracker = Tracker::new(targets);
        let totals = tracker.totals();
        info!(
            partitions = tracker.targets().len(),
            records = totals.values().sum::<u64>(),
            staging_db = target.staging_db,
            "Replaying every mapped topic from the beginning."
        );
        let mut display = Display::new(&totals, !self.options.progress);
        let outcome = self
            .replay_and_swap(
                &consumer,
                &offsets,
                &mut tracker,
                &mut display,
                &mut task,
                &shutdown,
                started_ms,
                t0,
            )
            .await;
        display.finish();
        stop.cancel();
        let joined = match task {
            Some(task) => Some(task.await),
            None => None,
        };
        let summary = match (&outcome, joined) {
            (_, Some(Ok(Ok(summary)))) => summary,
            (Ok(_), Some(Ok(Err(e)))) => {
                warn!(error = %one_line(&e), "The replay ended with an error after the swap.");
                Summary::default()
            }
            _ => Summary::default(),
        };
        let (per_topic, replay, total, attempts) = outcome?;
        if let Err(e) = target.flush_old_async().await {
            warn!(error = %one_line(&e), db = target.staging_db, "Freeing the old state failed; FLUSHDB it by hand.");
        }
        let report = Report {
            live_db: target.live_db,
            staging_db: target.staging_db,
            per_topic,
            replay,
            total,
            finished: t0.elapsed(),
            summary,
            attempts,
        };
        info!(
            events = report.events(),
            seconds = report.total.as_secs_f64(),
            "Rebuild swapped in."
        );
        Ok(report)
    }

    /// Waits for the replay to reach the start-time end of the log, then hands over.
    #[allow(clippy::too_many_arguments)]
    async fn replay_and_swap(
        &self,
        consumer: &Arc<SinkConsumer>,
        offsets: &Arc<OffsetsClient>,
        tracker: &mut Tracker,
        display: &mut Display,
        task: &mut ConsumeTask,
        shutdown: &CancellationToken,
        started_ms: u128,
        t0: Instant,
    ) -> Result<(BTreeMap<String, u64>, Duration, Duration, u32), RebuildError> {
        let progress = consumer.context().progress.clone();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Phase 1: the replay.
        let states = loop {
            self.wait(&mut ticks, task, shutdown).await?;
            let positions = consumer.position().map_err(|source| RebuildError::Kafka {
                what: "reading fetch positions",
                source,
            })?;
            let states = tracker.poll(&progress, &positions);
            display.update(&tracker.per_topic(&states));
            if states.iter().all(|s| s.done) {
                break states;
            }
        };
        let per_topic = tracker.per_topic(&states);
        let replay = t0.elapsed();
        let events: u64 = per_topic.values().sum();
        display.note(&format!(
            "Replayed {events} events in {:.2} s; handing over to db {}.",
            replay.as_secs_f64(),
            self.target.live_db
        ));

        // Phase 2: catch up with the live sink, then swap.
        let topics: Vec<String> = self
            .cfg
            .config
            .mappings
            .iter()
            .map(|m| m.topic.clone())
            .collect();
        let deadline = Instant::now() + self.options.handover_timeout;
        let mut forced: BTreeMap<String, i64> = BTreeMap::new();
        let mut attempts = 0;
        let mut last_lagging: String;
        loop {
            let positions = consumer.position().map_err(|source| RebuildError::Kafka {
                what: "reading fetch positions",
                source,
            })?;
            let states = tracker.poll(&progress, &positions);
            let live = self.target.live_offsets().await?;
            let lagging = self
                .lagging(offsets, tracker.targets(), &states, &live, &mut forced)
                .await?;
            if lagging.is_empty() {
                attempts += 1;
                let floors = floors(tracker.targets(), &states, &forced);
                let meta = self.meta(started_ms, &per_topic);
                let request = Handover {
                    token: self.token,
                    topics: &topics,
                    floors: &floors,
                    meta: &meta,
                };
                match self.target.handover(&request).await? {
                    HandoverOutcome::Swapped => {
                        return Ok((per_topic, replay, t0.elapsed(), attempts))
                    }
                    HandoverOutcome::LockLost(holder) => {
                        return Err(RebuildError::LockLost(holder))
                    }
                    HandoverOutcome::Lagging(l) => {
                        last_lagging = l
                            .iter()
                            .map(|l| format!("{} live {} > rebuilt {}", l.field, l.live, l.staging))
                            .collect::<Vec<_>>()
                            .join(", ");
                    }
                }
            } else {
                last_lagging = lagging;
            }
            if Instant::now() >= deadline {
                return Err(RebuildError::HandoverTimeout {
                    waited: self.options.handover_timeout,
                    lagging: last_lagging,
                });
            }
            self.wait(&mut ticks, task, shutdown).await?;
        }
    }

    /// One tick, or the reason to stop.
    async fn wait(
        &self,
        ticks: &mut tokio::time::Interval,
        task: &mut ConsumeTask,
        shutdown: &CancellationToken,
    ) -> Result<(), RebuildError> {
        let Some(handle) = task.as_mut() else {
            return Err(RebuildError::Stopped);
        };
        let ended = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(RebuildError::Interrupted),
            () = self.lock_lost.cancelled() => return Err(RebuildError::LockLost("another process".into())),
            result = handle => result,
            _ = ticks.tick() => return Ok(()),
        };
        *task = None;
        match ended {
            Ok(Err(e)) => Err(RebuildError::Consume(e)),
            _ if shutdown.is_cancelled() => Err(RebuildError::Interrupted),
            _ => Err(RebuildError::Stopped),
        }
    }

    /// The partitions where the live state is ahead, as text (empty: none). Fails on live
    /// offsets the log cannot have (unless `--force`, which records them in `forced`) and on
    /// partitions the rebuild does not consume.
    async fn lagging(
        &self,
        offsets: &Arc<OffsetsClient>,
        targets: &[PartitionTarget],
        states: &[PartitionState],
        live: &BTreeMap<String, i64>,
        forced: &mut BTreeMap<String, i64>,
    ) -> Result<String, RebuildError> {
        let mapped: BTreeSet<&str> = self
            .cfg
            .config
            .mappings
            .iter()
            .map(|m| m.topic.as_str())
            .collect();
        let mut behind = Vec::new();
        let mut unknown = Vec::new();
        for (field, &offset) in live {
            let Some((topic, partition)) = field.rsplit_once('/') else {
                continue;
            };
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            if !mapped.contains(topic) {
                continue;
            }
            let Some(i) = targets
                .iter()
                .position(|t| t.partition == partition && t.topic == topic)
            else {
                unknown.push(field.clone());
                continue;
            };
            let settled = states[i].next - 1;
            if settled >= offset || forced.get(field).is_some_and(|f| *f >= offset) {
                continue;
            }
            let high = partitions::high_watermark(
                Arc::clone(offsets),
                topic.to_owned(),
                partition,
                KAFKA_TIMEOUT,
            )
            .await
            .map_err(|source| RebuildError::Kafka {
                what: "reading a high watermark",
                source,
            })?;
            if offset >= high {
                if !self.options.force {
                    return Err(RebuildError::LiveAhead {
                        field: field.clone(),
                        live: offset,
                        high,
                    });
                }
                warn!(%field, live = offset, high, "The live state records an offset beyond the log; ignored (--force).");
                forced.insert(field.clone(), offset);
                continue;
            }
            behind.push(format!("{field} live {offset} > rebuilt {settled}"));
        }
        if !unknown.is_empty() {
            return Err(RebuildError::NewPartitions(unknown.join(", ")));
        }
        Ok(behind.join(", "))
    }

    /// The `sink:rebuild` fields.
    fn meta(&self, started_ms: u128, per_topic: &BTreeMap<String, u64>) -> Vec<(String, String)> {
        let mut meta = vec![
            ("started_at_ms".to_owned(), started_ms.to_string()),
            ("finished_at_ms".to_owned(), now_ms().to_string()),
            (
                "config_fingerprint".to_owned(),
                fingerprint(&self.cfg.config),
            ),
            (
                "events".to_owned(),
                per_topic.values().sum::<u64>().to_string(),
            ),
        ];
        for (topic, n) in per_topic {
            meta.push((format!("events:{topic}"), n.to_string()));
        }
        meta
    }
}

/// The offsets the rebuild settled per partition (`next - 1`), raised to the live offsets it
/// was told to ignore.
fn floors(
    targets: &[PartitionTarget],
    states: &[PartitionState],
    forced: &BTreeMap<String, i64>,
) -> Vec<(String, i64)> {
    targets
        .iter()
        .zip(states)
        .filter_map(|(t, s)| {
            let field = t.field();
            let floor = (s.next - 1).max(forced.get(&field).copied().unwrap_or(-1));
            (floor >= 0).then_some((field, floor))
        })
        .collect()
}
