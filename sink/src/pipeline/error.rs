//! How a pipeline fails: to start ([`StartError`]: a service down, a client that cannot be
//! built) or while consuming ([`ConsumeError`]: what retrying cannot fix).

use rdkafka::error::KafkaError;
use thiserror::Error;

use crate::apply::ApplyError;
use crate::dlq::DlqError;
use crate::health::HealthError;
use crate::memory::{MemoryError, PolicyError};
use crate::registry::RegistryError;

/// Why a pipeline could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A start-up check failed (the message names the component and its address).
    #[error(transparent)]
    Health(#[from] HealthError),
    /// Redis's eviction policy is refused, or the memory checks could not start.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The registry client could not be built (bad URL).
    #[error("invalid schema registry settings")]
    Registry(#[source] RegistryError),
    /// The dead-letter producer could not be created.
    #[error(transparent)]
    DeadLetters(#[from] DlqError),
    /// No Redis client for the configuration (for the start offsets, `self_heal.rs`).
    #[error("cannot make a redis client from redis.url and redis.tls")]
    RedisClient(#[source] crate::connection::ClientError),
    /// The consumer could not be created.
    #[error("cannot create the kafka consumer")]
    Create(#[source] KafkaError),
    /// The subscription was refused.
    #[error("cannot subscribe to {topics}")]
    Subscribe {
        /// The topics, comma-separated.
        topics: String,
        /// What librdkafka reported.
        #[source]
        source: KafkaError,
    },
    /// The partitions could not be assigned.
    #[error("kafka: assigning partitions")]
    Assign(#[source] KafkaError),
}

impl StartError {
    /// Whether Redis is configured in a way the sink refuses (exit code 2): an evicting
    /// `maxmemory-policy`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StartError::Memory(e) if e.is_refusal())
    }

    /// Whether a service did not answer a start-up check (Redis, the registry, the broker):
    /// an outage, which `sink run` waits for at start (`--wait-for-services`), rather than a
    /// refusal (credentials) or a configuration that waiting would not change.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StartError::Health(e) => e.is_outage(),
            StartError::Memory(MemoryError::Policy(PolicyError::Connect { .. })) => true,
            _ => false,
        }
    }

    /// Whether the service that did not answer is Redis.
    pub fn is_redis_unreachable(&self) -> bool {
        matches!(
            self,
            StartError::Health(HealthError::Redis { .. })
                | StartError::Memory(MemoryError::Policy(PolicyError::Connect { .. }))
        )
    }
}

/// Why consuming stopped with an error.
#[derive(Debug, Error)]
pub enum ConsumeError {
    /// A dead letter could not be written, for a reason retrying does not fix.
    #[error("dead-lettering a record failed")]
    DeadLetter(#[source] Box<DlqError>),
    /// Redis rejected a batch for a reason retrying does not fix.
    #[error("applying a batch of {changes} changes to redis failed")]
    Apply {
        /// Changes in the batch.
        changes: usize,
        /// What the applier reported.
        #[source]
        source: ApplyError,
    },
    /// Redis rejected many changes in a row: something systematic, not a bad record.
    #[error("redis rejected {count} changes in a row (batch of {changes}); stopping rather than dead-lettering the stream")]
    Rejected {
        /// Changes rejected in a row.
        count: u32,
        /// Changes in the batch.
        changes: usize,
        /// The last rejection.
        #[source]
        source: ApplyError,
    },
    /// The apply task ended without reporting (it panicked).
    #[error("the apply stage stopped unexpectedly")]
    ApplyStage,
    /// The consume task ended without reporting (it panicked).
    #[error("the consume stage stopped unexpectedly")]
    ConsumeStage,
}
