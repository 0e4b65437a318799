//! The subcommands as library functions, so that tests drive exactly what the binary runs:
//! [`run`] (health checks, then the consumer loop until shutdown) and [`validate`].
//!
//! [`run`] takes a [`StopWhen`], so another subcommand (a `rebuild` that replays the topics
//! from the beginning and stops at their end) reuses the same pipeline with another start and
//! stop policy.

use mapping::redact_url;
use std::sync::Arc;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::apply::Applier;
use crate::config::{SinkConfig, Writer};
use crate::connection::{redis_pool, PoolError};
use crate::consume::offsets::OffsetsClient;
use crate::consume::{self, ConsumeError, Pipeline, StopWhen, Summary};
use crate::decode::Decoder;
use crate::dlq::{DeadLetters, DlqError};
use crate::health::{self, HealthError};
use crate::registry::{Registry, RegistryError};

/// Why the sink could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// A start-up check failed (the message names the component and its address).
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The registry client could not be built (bad URL).
    #[error("invalid schema registry settings")]
    Registry(#[source] RegistryError),
    /// The Redis connection pool could not be set up.
    #[error(transparent)]
    RedisPool(#[from] PoolError),
    /// The dead-letter producer could not be created.
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
    /// The exclusive writer could not take its place (lease, bookkeeping).
    #[error("cannot start as the exclusive writer of the redis database")]
    Exclusive(#[source] crate::apply::ApplyError),
    /// Consuming failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

/// Checks Redis, the registry and Kafka, then consumes the mapped topics in the configured
/// group until `stop` says so (or `shutdown` is cancelled), and commits.
pub async fn run(
    cfg: &SinkConfig,
    stop: StopWhen,
    shutdown: CancellationToken,
) -> Result<Summary, RunError> {
    let config = &cfg.config;
    let registry =
        Arc::new(Registry::new(&config.schema_registry.url).map_err(RunError::Registry)?);
    let consumer_config = cfg.consumer_config();
    let topics: Vec<String> = config.mappings.iter().map(|m| m.topic.clone()).collect();
    health::check_all(
        &config.redis.url,
        &registry,
        &consumer_config,
        &topics,
        health::DEFAULT_TIMEOUT,
    )
    .await?;

    let pool = redis_pool(&config.redis.url)?;
    let applier = match cfg.writer {
        Writer::Shared => Applier::new(pool, config),
        Writer::Exclusive { lease } => {
            match Applier::exclusive(pool, config, lease, &shutdown)
                .await
                .map_err(RunError::Exclusive)?
            {
                Some(applier) => applier,
                None => return Ok(Summary::default()),
            }
        }
    };
    let dead_letters = Arc::new(DeadLetters::new(
        &cfg.producer_config(),
        &config.kafka.dead_letter_topic,
    )?);
    let pipeline = Pipeline {
        config: Arc::clone(config),
        decoder: Arc::new(Decoder::new(registry)),
        applier,
        dead_letters,
        batch: cfg.batch,
    };
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let consumer = consume::subscribe(&consumer_config, &topic_refs)?;
    let offsets = OffsetsClient::new(&consumer_config).map_err(ConsumeError::Create)?;
    info!(
        group = %config.kafka.group_id,
        topics = %topics.join(","),
        redis = %redact_url(&config.redis.url),
        "Consuming."
    );
    Ok(consume::consume(consumer, Arc::new(offsets), pipeline, stop, shutdown).await?)
}
