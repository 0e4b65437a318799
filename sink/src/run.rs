//! `sink run` as a library function, so that tests drive exactly what the binary runs: the
//! pipeline subscribed to every mapped topic in the configured group, writing the live
//! database with the configured writer, until shutdown (or, for tests and benchmarks, until
//! it has caught up with the end of the log); with `--metrics-addr`, serving `/metrics`,
//! `/health` and `/ready` from start to stop.
//!
//! Each pipeline's applier comes from `run/appliers.rs`: as `--writer` asks, and for
//! `--writer auto` (the default) the exclusive writer or the change script, chosen again
//! when the exclusive writer cannot go on (then a new pipeline resumes from the committed
//! offsets, as after Redis lost writes), once the shared sinks it wrote beside are gone, and
//! when a shared sink stands by for the lease it holds (the running pipeline drained first,
//! as for a reload). A `--writer shared` sink refused by an exclusive sink stands by for it
//! the same way, instead of stopping.
//!
//! # Reloads
//!
//! [`run_reloading`] also re-reads the configuration when [`Triggers`] asks. A file that
//! [`reload::vet`] accepts and whose services answer is applied between two pipelines: the
//! running one is drained (it stops consuming, applies the batches it queued, and commits the
//! offsets it stored; a partial batch is dropped unapplied, so it is delivered again), its
//! consumer leaves the group, and a new pipeline with the new configuration and a new
//! applier joins it and resumes from the committed offsets. Every partition thus continues
//! exactly after its last applied record: nothing is lost, and nothing is applied twice
//! except what the writers' position guards already make harmless. An exclusive writer keeps
//! its lease throughout: the next applier has the same [`WriterId`], takes over the lease
//! keys before the old writer is dropped, and loads the bookkeeping (of the new mappings
//! too) from Redis. A refused file changes nothing. Every pipeline reports into the first
//! one's [`crate::readiness::Readiness`], and each reload counts in
//! `sink_config_reloads_total{outcome}`.

use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::{one_line, redact_url, ConfigErrors};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod appliers;
mod shared_sinks_seen;

use crate::apply::{Applier, ApplyError, WriterId};
use crate::config::{SinkConfig, Writer};
use crate::connection::{redis_pool, PoolError};
use crate::pipeline::{
    Backoff, ConsumeError, Pipeline, Source, StartError, StopWhen, Summary,
    WAITING_TO_START_MAX_DELAY,
};
use crate::readiness::Readiness;
use crate::reload::{self, Refused, Triggers};
use crate::telemetry;
use crate::telemetry::server::{MetricsServer, ServeError, Serving};
use appliers::Appliers;

/// Why the sink could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The pipeline could not start (a start-up check failed, a client could not be built).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The Redis connection pool could not be set up.
    #[error(transparent)]
    RedisPool(#[from] PoolError),
    /// The exclusive writer could not take its place (lease, bookkeeping).
    #[error("cannot start as the exclusive writer of the redis database")]
    Exclusive(#[source] ApplyError),
    /// Consuming failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] ServeError),
}

impl RunError {
    /// Whether the configuration must change before the sink can run (exit code 2): the
    /// exclusive writer's bookkeeping is above `--max-writer-memory`, at start or grown there.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Exclusive(ApplyError::WriterMemory(_))
                | RunError::Consume(ConsumeError::Apply {
                    source: ApplyError::WriterMemory(_),
                    ..
                })
        )
    }

    /// Whether Redis is configured in a way the sink refuses to run with (exit code 2, like
    /// a bad configuration): an evicting `maxmemory-policy`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, RunError::Start(e) if e.is_refusal())
    }
}

/// Checks Redis, the registry and Kafka, then consumes the mapped topics in the configured
/// group until `stop` says so (or `shutdown` is cancelled), and commits. When Redis loses
/// writes it had acknowledged, the pipeline stops and starts again in this process, so that
/// every partition resumes from what Redis holds (`pipeline/self_heal.rs`); the summary
/// counts every such run.
pub async fn run(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, RunError> {
    run_reporting_to(cfg, stop, shutdown, Readiness::new()).await
}

/// [`run`], its pipelines reporting into `readiness` (for embedders and tests that watch it
/// as `GET /ready` does).
pub async fn run_reporting_to(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> Result<Summary, RunError> {
    let load = || Ok(cfg.clone());
    consume(
        cfg,
        load,
        Triggers::never(),
        stop,
        shutdown,
        readiness,
        None,
    )
    .await
}

/// [`run`], re-reading the configuration with `load` whenever `triggers` asks and applying
/// what [`reload::vet`] accepts (see the module documentation; a refusal is logged and the
/// sink keeps running as it was), and serving `metrics` (when given) from before the
/// start-up checks until the last pipeline stopped; `/ready` follows the pipelines'
/// readiness.
pub async fn run_reloading(
    cfg: &SinkConfig,
    load: impl Fn() -> Result<SinkConfig, ConfigErrors>,
    triggers: Triggers,
    stop: StopWhen,
    shutdown: CancellationToken,
    metrics: Option<MetricsServer>,
) -> Result<Summary, RunError> {
    let serving = match metrics {
        Some(server) => Some(server.spawn(shutdown.clone())?),
        None => None,
    };
    let readiness = Readiness::new();
    let outcome = consume(
        cfg,
        load,
        triggers,
        stop,
        shutdown,
        readiness,
        serving.as_ref(),
    )
    .await;
    if let Some(serving) = serving {
        serving.stop().await;
    }
    outcome
}

/// The pipelines from the first connect to the last stop, one per configuration (and per
/// self-healing restart), all reporting into `readiness`, which is handed to `serving` before
/// the first start-up checks (so that `/ready` says not ready while they wait for a service,
/// and names Redis when it is Redis).
async fn consume(
    cfg: &SinkConfig,
    load: impl Fn() -> Result<SinkConfig, ConfigErrors>,
    mut triggers: Triggers,
    stop: StopWhen,
    shutdown: CancellationToken,
    readiness: Readiness,
    serving: Option<&Serving>,
) -> Result<Summary, RunError> {
    let mut appliers = Appliers::new();
    let mut cfg = cfg.clone();
    let mut pool = redis_pool(&cfg.config.redis)?;
    if let Some(serving) = serving {
        serving.watch(&readiness);
    }
    let Some(mut pipeline) = first_pipeline(&cfg, &readiness, &shutdown).await? else {
        // Shut down while waiting for the services.
        return Ok(Summary::default());
    };
    let Some(mut applier) = appliers.next(&cfg, pool.clone(), &shutdown).await? else {
        // Shut down while standing by.
        return Ok(Summary::default());
    };
    let mut total = Summary::default();
    'pipelines: loop {
        let generation = shutdown.child_token();
        let mut running = pipeline.start(
            Source::Group,
            Arc::clone(&applier),
            stop,
            generation.clone(),
        )?;
        info!(
            group = %cfg.config.kafka.group_id,
            topics = %cfg.topics().join(","),
            redis = %redact_url(&cfg.config.redis.url),
            batch_records = cfg.batch.max_records,
            batch_bytes = cfg.batch.max_bytes,
            linger_ms = cfg.batch.linger.as_millis(),
            "Consuming."
        );
        let mut choose_again = appliers.choose_again(&cfg, &pool);
        let (next, next_pipeline, why) = loop {
            tokio::select! {
                stopped = running.stopped() => {
                    match stopped {
                        Ok(summary) => {
                            let lost = summary.bookkeeping_lost;
                            total += summary;
                            if !lost || shutdown.is_cancelled() {
                                release(&applier).await;
                                return Ok(total);
                            }
                            // Redis lost writes it had acknowledged (`pipeline/self_heal.rs`):
                            // the same configuration again, every partition from what Redis
                            // holds.
                            info!("Starting the pipeline again; every assigned partition resumes from what redis holds.");
                        }
                        // `--writer auto`: the script, or the choice made again
                        // (run/appliers.rs), from the committed offsets.
                        Err(e) if appliers.recovers(&cfg, &e) => {}
                        Err(e) => {
                            release(&applier).await;
                            return Err(e.into());
                        }
                    }
                    drop(running);
                    let Some((next, next_applier)) =
                        reconnect(&cfg, pool.clone(), &mut appliers, &readiness, &shutdown).await?
                    else {
                        release(&applier).await;
                        return Ok(total);
                    };
                    hand_over(&applier, &next_applier).await;
                    applier = next_applier;
                    pipeline = next;
                    continue 'pipelines;
                }
                trigger = triggers.next() => {
                    info!(trigger = trigger.as_str(), "Reloading the configuration.");
                    match prepare(&cfg, load(), appliers.id(), &pool, &readiness).await {
                        Ok((next, pipeline)) => break (next, pipeline, Switch::Reload),
                        Err(refused) => {
                            metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "refused").increment(1);
                            warn!(
                                error = %one_line(&refused),
                                "Configuration reload refused; running on the previous configuration."
                            );
                        }
                    }
                }
                () = &mut choose_again => {
                    match Pipeline::connect_reporting_to(&cfg, &cfg.consumer_config(), readiness.clone()).await {
                        Ok(pipeline) => break (cfg.clone(), pipeline, Switch::Writer),
                        Err(e) => {
                            warn!(error = %one_line(&e), "Cannot start a pipeline for the writer chosen again; writing as before until the next check (--writer auto).");
                            choose_again = appliers.choose_again(&cfg, &pool);
                        }
                    }
                }
            }
        };
        generation.cancel();
        let stopped = running.stopped().await;
        drop(running);
        match stopped {
            Ok(summary) => total += summary,
            Err(e) => {
                release(&applier).await;
                return Err(e.into());
            }
        }
        if shutdown.is_cancelled() {
            // Shut down while the new configuration was prepared.
            release(&applier).await;
            return Ok(total);
        }
        if why == Switch::Reload {
            // The same database (vetted), perhaps with new credentials or certificates.
            pool = redis_pool(&next.config.redis)?;
        }
        let Some(next_applier) = appliers.next(&next, pool.clone(), &shutdown).await? else {
            return Ok(total);
        };
        // An exclusive writer's lease keys name this process's writer id, which the new
        // applier holds now (unless it is the script).
        hand_over(&applier, &next_applier).await;
        applier = next_applier;
        cfg = next;
        pipeline = next_pipeline;
        if why == Switch::Reload {
            metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "applied").increment(1);
            info!(
                mappings = cfg.config.mappings.len(),
                "Configuration reloaded; consuming with it."
            );
        }
    }
}

/// The first pipeline, once Redis, the registry and the broker answer: a service that does
/// not is waited for with backoff, each attempt logged with the line that names it and its
/// address, for at most `cfg.wait_for_services` (then that error: exit 1); `None` at
/// shutdown. Every other start-up error is returned at once: waiting would not change a
/// refused configuration.
async fn first_pipeline(
    cfg: &SinkConfig,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<Pipeline>, RunError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::capped_at(WAITING_TO_START_MAX_DELAY);
    loop {
        let unreachable =
            match Pipeline::connect_reporting_to(cfg, &cfg.consumer_config(), readiness.clone())
                .await
            {
                Ok(pipeline) => return Ok(Some(pipeline)),
                Err(e) if e.is_unreachable() => e,
                Err(e) => return Err(e.into()),
            };
        if cfg
            .wait_for_services
            .is_some_and(|limit| started.elapsed() >= limit)
        {
            return Err(unreachable.into());
        }
        // Until it answers, /ready says so.
        if unreachable.is_redis_unreachable() {
            readiness.set_redis_reachable(false);
        }
        if !backoff.wait("Start-up check", &unreachable, shutdown).await {
            return Ok(None);
        }
    }
}

/// Why a running pipeline is drained for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// A new configuration, vetted.
    Reload,
    /// The same configuration, the applier chosen again: `--writer auto` beside shared
    /// sinks that are gone, or giving its exclusive lease up to a shared sink standing by
    /// for it.
    Writer,
}

/// A pipeline and an applier for `cfg` again, after Redis lost writes (or `--writer auto`
/// changed its writer); `None` at shutdown.
/// The process was healthy a moment ago, so a service that is down now (Redis restarting,
/// the registry away) is waited for with backoff, as the running pipeline would. An
/// exclusive applier of the same `writer` takes the lease again (or stands by, if another
/// sink took it meanwhile) and loads the bookkeeping Redis now holds.
async fn reconnect(
    cfg: &SinkConfig,
    pool: Pool,
    appliers: &mut Appliers,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<Option<(Pipeline, Arc<Applier>)>, RunError> {
    let mut backoff = Backoff::capped_at(WAITING_TO_START_MAX_DELAY);
    let pipeline = loop {
        match Pipeline::connect_reporting_to(cfg, &cfg.consumer_config(), readiness.clone()).await {
            Ok(pipeline) => break pipeline,
            Err(e) => {
                // No apply stage runs to notice the outage meanwhile: /ready says it.
                if e.is_redis_unreachable() {
                    readiness.set_redis_reachable(false);
                }
                if !backoff
                    .wait("Starting the pipeline again", &e, shutdown)
                    .await
                {
                    return Ok(None);
                }
            }
        }
    };
    let Some(applier) = appliers.next(cfg, pool, shutdown).await? else {
        return Ok(None);
    };
    Ok(Some((pipeline, applier)))
}

/// Vets a re-read configuration and connects a pipeline for it, while the current one runs.
async fn prepare(
    current: &SinkConfig,
    loaded: Result<SinkConfig, ConfigErrors>,
    writer: &WriterId,
    pool: &Pool,
    readiness: &Readiness,
) -> Result<(SinkConfig, Pipeline), Refused> {
    let next = reload::vet(current, loaded.map_err(Refused::Invalid)?, pool).await?;
    if let Writer::Exclusive { .. } | Writer::Auto { .. } = next.writer {
        reload::check_leases(current, &next, writer, pool).await?;
    }
    let pipeline =
        Pipeline::connect_reporting_to(&next, &next.consumer_config(), readiness.clone())
            .await
            .map_err(Refused::Start)?;
    Ok((next, pipeline))
}

/// An exclusive applier followed by the change script (`--writer auto` fell back, or a
/// reload added a mapping with `ttl_seconds`) gives its lease up once the script announced
/// itself, before the script writes anything: the script refuses to write under the lease.
async fn hand_over(previous: &Applier, next: &Applier) {
    if previous.is_owning() && !next.is_owning() {
        if let Err(e) = previous.release_to_script().await {
            warn!(error = %one_line(&e), "Releasing the exclusive lease failed; the change script waits until it lapses.");
        }
    }
}

/// An exclusive applier gives its lease up at the end, so that a standby or a restart need
/// not wait for it to lapse.
async fn release(applier: &Applier) {
    if let Err(e) = applier.release().await {
        warn!(error = %one_line(&e), "Releasing the exclusive lease failed; it lapses by itself.");
    }
}
