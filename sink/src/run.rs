//! `sink run` as a library function, so that tests drive exactly what the binary runs: the
//! pipeline subscribed to every mapped topic in the configured group, writing the live
//! database with the configured writer, until shutdown (or, for tests and benchmarks, until
//! it has caught up with the end of the log).

use mapping::redact_url;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::apply::{Applier, ApplyError};
use crate::config::{SinkConfig, Writer};
use crate::connection::{redis_pool, PoolError};
use crate::pipeline::{ConsumeError, Pipeline, Source, StartError, StopWhen, Summary};

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
    let mut total = Summary::default();
    loop {
        let summary = run_once(cfg, stop, shutdown.clone()).await?;
        total.absorb(&summary);
        if !summary.bookkeeping_lost || shutdown.is_cancelled() {
            return Ok(total);
        }
        info!(
            "Starting the pipeline again; every assigned partition resumes from what redis holds."
        );
    }
}

/// One pipeline from start-up checks to stop.
async fn run_once(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, RunError> {
    let config = &cfg.config;
    let consumer_config = cfg.consumer_config();
    let pipeline = Pipeline::connect(cfg, &consumer_config).await?;
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
