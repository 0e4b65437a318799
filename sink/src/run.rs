//! `sink run` as a library function, so that tests drive exactly what the binary runs: the
//! pipeline subscribed to every mapped topic in the configured group, writing the live
//! database with the configured writer, until shutdown (or, for tests and benchmarks, until
//! it has caught up with the end of the log); with `--metrics-addr`, serving `/metrics`,
//! `/health` and `/ready` from start to stop.

use mapping::redact_url;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::apply::{Applier, ApplyError};
use crate::config::{SinkConfig, Writer};
use crate::connection::{redis_pool, PoolError};
use crate::pipeline::{ConsumeError, Pipeline, Source, StartError, StopWhen, Summary};
use crate::telemetry::server::{MetricsServer, ServeError, Serving};

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

/// Checks Redis, the registry and Kafka, then consumes the mapped topics in the configured
/// group until `stop` says so (or `shutdown` is cancelled), and commits.
pub async fn run(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, RunError> {
    run_serving(cfg, stop, shutdown, None).await
}

/// [`run`], serving `metrics` (when given) from before the start-up checks until the
/// pipeline stopped; `/ready` follows the pipeline's readiness.
pub async fn run_serving(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
    metrics: Option<MetricsServer>,
) -> Result<Summary, RunError> {
    let serving = match metrics {
        Some(server) => Some(server.spawn(shutdown.clone())?),
        None => None,
    };
    let outcome = consume(cfg, stop, shutdown, serving.as_ref()).await;
    if let Some(serving) = serving {
        serving.stop().await;
    }
    outcome
}

/// The pipeline from connect to stop, its readiness handed to `serving`.
async fn consume(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
    serving: Option<&Serving>,
) -> Result<Summary, RunError> {
    let config = &cfg.config;
    let consumer_config = cfg.consumer_config();
    let pipeline = Pipeline::connect(cfg, &consumer_config).await?;
    if let Some(serving) = serving {
        serving.watch(pipeline.readiness());
    }
    let pool = redis_pool(&config.redis)?;
    let applier = match cfg.writer {
        Writer::Shared => Applier::new(pool, config),
        Writer::Exclusive { lease } => {
            match Applier::exclusive(pool, config, lease, &shutdown)
                .await
                .map_err(RunError::Exclusive)?
            {
                Some(applier) => applier,
                // Shut down while standing by.
                None => return Ok(Summary::default()),
            }
        }
    };
    let mut running = pipeline.start(Source::Group, applier, stop, shutdown)?;
    info!(
        group = %config.kafka.group_id,
        topics = %cfg.topics().join(","),
        redis = %redact_url(&config.redis.url),
        "Consuming."
    );
    Ok(running.stopped().await?)
}
