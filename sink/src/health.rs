//! Start-up checks: Redis answers `PING`, the schema registry answers, the Kafka brokers
//! return metadata. Each failure is one line naming the component and its address, so an
//! operator sees at once what is down (`redis at redis://127.0.0.1:6379 is unreachable: ...`).
//!
//! A mapped topic that does not exist yet is not an error: Debezium creates topics when it
//! first writes to them, and the subscription picks them up then. It is logged as a warning.

use std::time::Duration;

use mapping::{one_line, redact_url, RedisConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use thiserror::Error;
use tracing::{info, warn};

use crate::connection::redis_client;
use crate::registry::{Registry, RegistryError};

/// How long each check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed start-up check.
#[derive(Debug, Error)]
pub enum HealthError {
    /// Redis did not answer `PING`.
    #[error("redis at {url} is unreachable: {reason}")]
    Redis {
        /// The Redis URL, password redacted.
        url: String,
        /// Why, as one line.
        reason: String,
    },
    /// The schema registry did not answer.
    #[error("schema registry at {url} is unreachable: {reason}")]
    Registry {
        /// The registry base URL.
        url: String,
        /// Why, as one line.
        reason: String,
    },
    /// No broker returned metadata.
    #[error("kafka at {servers} is unreachable: {reason}")]
    Kafka {
        /// The bootstrap servers.
        servers: String,
        /// What librdkafka reported, as one line.
        reason: String,
    },
}

/// Sends `PING` to `redis` (a [`RedisConfig`] or a bare URL) on a fresh connection, with the
/// configured credentials and TLS.
pub async fn check_redis(
    redis: impl Into<RedisConfig>,
    timeout: Duration,
) -> Result<(), HealthError> {
    let redis = redis.into();
    let fail = |reason: String| HealthError::Redis {
        url: redact_url(&redis.url),
        reason,
    };
    let client = redis_client(&redis).map_err(|e| fail(one_line(&e)))?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(fail(one_line(&e))),
        Err(_) => Err(fail(format!("no answer to PING within {timeout:?}"))),
    }
}

/// Asks the registry for its subjects (see [`Registry::health_check`]).
pub async fn check_registry(registry: &Registry) -> Result<(), HealthError> {
    registry
        .health_check()
        .await
        .map_err(|e: RegistryError| HealthError::Registry {
            url: registry.base_url().to_owned(),
            reason: one_line(&e),
        })
}

/// What the broker check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerReport {
    /// Brokers in the cluster metadata.
    pub brokers: usize,
    /// Mapped topics the cluster does not have yet.
    pub missing_topics: Vec<String>,
}

/// Fetches cluster metadata with `client` settings and checks which of `topics` exist.
pub async fn check_kafka(
    client: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<BrokerReport, HealthError> {
    let servers = client
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_owned();
    let fail = |source: KafkaError| HealthError::Kafka {
        servers: servers.clone(),
        reason: one_line(&source),
    };
    // A plain consumer without a group: metadata only, no group membership.
    let mut config = client.clone();
    config.remove("group.id");
    let consumer: BaseConsumer = config.create().map_err(fail)?;
    let topics = topics.to_vec();
    let metadata = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(None, timeout).map(|metadata| {
            let existing: Vec<String> = metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .collect();
            let missing = topics
                .into_iter()
                .filter(|t| !existing.contains(t))
                .collect();
            BrokerReport {
                brokers: metadata.brokers().len(),
                missing_topics: missing,
            }
        })
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled));
    metadata.map_err(fail)
}

/// Runs every check in order (Redis, registry, Kafka) and stops at the first failure;
/// warns about mapped topics that do not exist yet.
pub async fn check_all(
    redis: &RedisConfig,
    registry: &Registry,
    consumer_config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<BrokerReport, HealthError> {
    check_redis(redis, timeout).await?;
    check_registry(registry).await?;
    let report = check_kafka(consumer_config, topics, timeout).await?;
    for topic in &report.missing_topics {
        warn!(%topic, "Mapped topic does not exist yet; it is consumed once Debezium creates it.");
    }
    info!(
        brokers = report.brokers,
        "Redis, schema registry and Kafka are reachable."
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redis_failure_names_redis_and_address() {
        // Port 1 on loopback: nothing listens there.
        let err = check_redis("redis://:pw@127.0.0.1:1", Duration::from_secs(2))
            .await
            .unwrap_err();
        let line = err.to_string();
        assert!(
            line.starts_with("redis at redis://:***@127.0.0.1:1 is unreachable: "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
}
