//! Start-up checks: Redis answers `PING`, the schema registry answers, the Kafka brokers
//! return metadata. Each failure is one line naming the component and its address, so an
//! operator sees at once what is down (`redis at redis://127.0.0.1:6379 is unreachable: ...`).
//!
//! Each failure also says whether it looks like an outage (nothing answered: connection
//! refused, a timeout, a dropped connection, a server still loading) or a refusal that waiting
//! would not change (credentials, an address that is no service of that kind): `sink run`
//! waits at start for the former only (`run.rs`, `--wait-for-services`).
//!
//! A mapped topic that does not exist yet is not an error: Debezium creates topics when it
//! first writes to them, and the subscription picks them up then. It is logged as a warning.

use std::time::Duration;

use mapping::{one_line, redact_url, RedisConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
        /// Nothing answered ([`HealthError::is_outage`]).
        outage: bool,
    },
    /// The schema registry did not answer.
    #[error("schema registry at {url} is unreachable: {reason}")]
    Registry {
        /// The registry base URL.
        url: String,
        /// Why, as one line.
        reason: String,
        /// Nothing answered, or the registry answered 5xx ([`HealthError::is_outage`]).
        outage: bool,
    },
    /// No broker returned metadata.
    #[error("kafka at {servers} is unreachable: {reason}")]
    Kafka {
        /// The bootstrap servers.
        servers: String,
        /// What librdkafka reported, as one line.
        reason: String,
        /// No broker answered ([`HealthError::is_outage`]).
        outage: bool,
    },
}

impl HealthError {
    /// Whether the service did not answer (down, restarting, unreachable for now) rather
    /// than refused the sink (credentials, a bad client configuration): only the former
    /// ends by itself.
    pub fn is_outage(&self) -> bool {
        match self {
            HealthError::Redis { outage, .. }
            | HealthError::Registry { outage, .. }
            | HealthError::Kafka { outage, .. } => *outage,
        }
    }
}

/// Whether Redis did not answer, as opposed to answering with a refusal (`WRONGPASS`,
/// `NOPERM`, a TLS handshake it rejects): refused or dropped connections, timeouts, a
/// server still loading its data.
pub(crate) fn redis_outage(e: &redis::RedisError) -> bool {
    use std::io::ErrorKind;
    let io_outage = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        });
    e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || io_outage
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN")
        )
}

/// Whether no broker answered the metadata request, as opposed to refusing the client
/// (authentication, a bad configuration).
fn kafka_outage(e: &KafkaError) -> bool {
    match e {
        KafkaError::MetadataFetch(code) => !matches!(
            code,
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidArgument
                | RDKafkaErrorCode::SSL
        ),
        KafkaError::Canceled => true,
        _ => false,
    }
}

/// Sends `PING` to `redis` (a [`RedisConfig`] or a bare URL) on a fresh connection, with the
/// configured credentials and TLS.
pub async fn check_redis(
    redis: impl Into<RedisConfig>,
    timeout: Duration,
) -> Result<(), HealthError> {
    let redis = redis.into();
    let fail = |reason: String, outage: bool| HealthError::Redis {
        url: redact_url(&redis.url),
        reason,
        outage,
    };
    let client = redis_client(&redis).map_err(|e| fail(one_line(&e), false))?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(fail(one_line(&e), redis_outage(&e))),
        Err(_) => Err(fail(format!("no answer to PING within {timeout:?}"), true)),
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
            outage: e.is_outage(),
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
        outage: kafka_outage(&source),
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
        assert!(err.is_outage(), "nothing listens: an outage");
    }
}
