//! `sink run` as a library function, so that tests drive exactly what the binary runs: the
//! pipeline subscribed to every mapped topic in the configured group, writing the live
//! database with the configured writer, until shutdown (or, for tests and benchmarks, until
//! it has caught up with the end of the log).

use mapping::{one_line, redact_url};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::{Applier, ApplyError};
use crate::config::{SinkConfig, Writer};
use crate::connection::{redis_pool, PoolError};
use crate::memory;
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
/// group until `stop` says so (or `shutdown` is cancelled), and commits.
pub async fn run(
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
        Writer::Exclusive { lease, max_memory } => loop {
            match Applier::exclusive(pool.clone(), config, lease, max_memory, &shutdown).await {
                Ok(Some(applier)) => break applier,
                // Shut down while standing by.
                Ok(None) => return Ok(Summary::default()),
                // Redis is full: taking the lease is a write. Wait for room rather than exit
                // (and be restarted into the same full Redis).
                Err(e) if e.is_out_of_memory() => {
                    warn!(error = %one_line(&e), "Redis is full; the exclusive writer waits for room to take its lease.");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(Summary::default()),
                        () = tokio::time::sleep(memory::CHECK_INTERVAL) => {}
                    }
                }
                Err(e) => return Err(RunError::Exclusive(e)),
            }
        },
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
