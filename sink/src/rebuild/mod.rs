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
//!    read now are the end of the replay. The same [`Pipeline`] as `sink run` applies the
//!    records to the staging database (with [`Applier::rebuilding`]: the bookkeeping in
//!    this process, plain pipelined writes) until every partition is applied up to its
//!    watermark (a tail of offsets that holds no records, such as compacted-away records or
//!    transaction markers, counts once the fetch position passed it and nothing moved for
//!    3 s). Then the rows' positions (`sink:rows`), which the replay held back, are written
//!    once each; later batches record them as `sink run` does.
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
//!
//! # Layout
//!
//! This file orchestrates the steps; `partitions.rs` finds the partitions to replay and says
//! when each is done, `handover.rs` catches up with the live sink and swaps, `target.rs` is
//! the Redis side (databases, lock, memory check, `handover.lua`), `display.rs` shows the
//! progress and `report.rs` what was done.

mod display;
mod error;
mod handover;
mod partitions;
mod report;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use mapping::{one_line, redact_url};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::Applier;
use crate::config::SinkConfig;
use crate::connection::redis_pool;
use crate::pipeline::{Pipeline, Source, StopWhen, Summary};
use display::Display;
use handover::{Context, Replay};
use partitions::{Tracker, KAFKA_TIMEOUT};
use report::now_ms;
use target::{Target, LOCK_TTL};

pub use error::RebuildError;
pub use report::{fingerprint, Report};

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

/// Rebuilds the live database of `cfg.config.redis.url` from the log (see the module docs).
pub async fn rebuild(
    cfg: &SinkConfig,
    options: &RebuildOptions,
    shutdown: CancellationToken,
) -> Result<Report, RebuildError> {
    let config = &cfg.config;
    let mut consumer_config = cfg.consumer_config();
    let unique = format!("{}-{}", std::process::id(), now_ms());
    consumer_config
        .set(
            "group.id",
            format!("{}-rebuild-{unique}", config.kafka.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let pipeline = Pipeline::connect(cfg, &consumer_config).await?;

    let target = Target::connect(&config.redis, options.staging_db).await?;
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
        force: options.force,
        handover_timeout: options.handover_timeout,
        target: &target,
        token: &token,
        lock_lost: &lock_lost,
    };
    let result = ctx.run(pipeline, options.progress, shutdown).await;
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

impl Context<'_> {
    /// Steps 3 to 6, with the lock held.
    async fn run(
        &self,
        pipeline: Pipeline,
        progress: bool,
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
        } else if self.force {
            warn!(%estimate, evicting_policy = estimate.evicts, "Both states may not fit under maxmemory; going on (--force).");
        } else {
            return Err(RebuildError::Memory(estimate));
        }
        target.flush_staging().await?;

        let targets = partitions::discover(
            Arc::clone(pipeline.offsets()),
            self.cfg.consumed_topics(),
            KAFKA_TIMEOUT,
        )
        .await
        .map_err(|source| RebuildError::Kafka {
            what: "reading partitions and watermarks",
            source,
        })?;
        let source = Source::FromBeginning(
            targets
                .iter()
                .map(|t| (t.topic.clone(), t.partition))
                .collect(),
        );
        let pool = redis_pool(&target.staging_redis)?;
        let stop = shutdown.child_token();
        let applier = Arc::new(Applier::rebuilding(pool, config));
        let running = pipeline.start(
            source,
            Arc::clone(&applier),
            StopWhen::Shutdown,
            stop.clone(),
        )?;

        let tracker = Tracker::new(targets);
        let totals = tracker.totals();
        info!(
            partitions = tracker.targets().len(),
            records = totals.values().sum::<u64>(),
            staging_db = target.staging_db,
            "Replaying every mapped topic from the beginning."
        );
        let mut replay = Replay {
            running,
            applier,
            ended: false,
            tracker,
            display: Display::new(&totals, !progress),
        };
        let outcome = self
            .replay_and_swap(&mut replay, &shutdown, started_ms, t0)
            .await;
        replay.display.finish();
        stop.cancel();
        let summary = match (&outcome, replay.ended) {
            (_, true) => Summary::default(),
            (Ok(_), false) => match replay.running.stopped().await {
                Ok(summary) => summary,
                Err(e) => {
                    warn!(error = %one_line(&e), "The replay ended with an error after the swap.");
                    Summary::default()
                }
            },
            (Err(_), false) => replay.running.stopped().await.unwrap_or_default(),
        };
        let swapped = outcome?;
        if let Err(e) = target.flush_old_async().await {
            warn!(error = %one_line(&e), db = target.staging_db, "Freeing the old state failed; FLUSHDB it by hand.");
        }
        let report = Report {
            live_db: target.live_db,
            staging_db: target.staging_db,
            per_topic: swapped.per_topic,
            replay: swapped.replay,
            total: swapped.total,
            finished: t0.elapsed(),
            summary,
            attempts: swapped.attempts,
        };
        info!(
            events = report.events(),
            seconds = report.total.as_secs_f64(),
            "Rebuild swapped in."
        );
        Ok(report)
    }
}
