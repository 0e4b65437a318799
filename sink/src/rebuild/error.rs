//! Why a rebuild fails. In every case the live database still serves the old state.

use std::time::Duration;

use rdkafka::error::KafkaError;
use thiserror::Error;

use super::target::{MemoryEstimate, TargetError};
use crate::apply::ApplyError;
use crate::connection::PoolError;
use crate::pipeline::{ConsumeError, StartError};

/// Why a rebuild failed; in every case the live database still serves the old state.
#[derive(Debug, Error)]
pub enum RebuildError {
    /// The pipeline could not start (a start-up check failed, a client could not be built).
    #[error(transparent)]
    Start(#[from] StartError),
    /// Redis failed or refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The staging connection pool could not be set up.
    #[error(transparent)]
    RedisPool(#[from] PoolError),
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
    /// The rows' positions held back during the replay could not be written.
    #[error(
        "writing the rows' positions (sink:rows) the replay held back to the staging database"
    )]
    HeldRows(#[source] ApplyError),
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
    /// the staging database is the live one, or Redis has an evicting `maxmemory-policy`.
    pub fn is_usage(&self) -> bool {
        match self {
            RebuildError::Target(TargetError::SameDb(_)) => true,
            RebuildError::Start(e) => e.is_refusal(),
            _ => false,
        }
    }
}
