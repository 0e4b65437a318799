//! Redis memory: the sink neither lets Redis drop its keys nor drops out of its consumer
//! group when Redis is full.
//!
//! - At start ([`start`], from [`crate::pipeline::Pipeline::connect`], so for `sink run` and
//!   `sink rebuild` alike), `policy.rs` reads `maxmemory-policy` and refuses one that may
//!   evict the sink's keys (README, "Redis memory"), unless the operator allows it.
//! - While the pipeline runs, `guard.rs` ([`MemoryGuard`]) says whether Redis has room:
//!   it pauses on an `OOM` reply from an apply, and on `used_memory` above the configured
//!   share of `maxmemory` (read from `INFO memory` once a second, `info.rs`), and resumes
//!   once `used_memory` is back under the share. The consume stage pauses and resumes the
//!   partitions by it; the lanes retry the refused slice until Redis has room again.

mod guard;
mod info;
mod policy;

use mapping::{Mapping, RedisConfig};
use thiserror::Error;
use tracing::info;

use crate::config::MemorySettings;
use crate::connection::{redis_client, redis_pool, PoolError};
use crate::health::DEFAULT_TIMEOUT;
use crate::readiness::Readiness;

pub use guard::{MemoryGuard, CHECK_INTERVAL};
pub use info::MemoryInfo;
pub use policy::{Eviction, PolicyError};

/// Why the memory checks could not start.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The eviction policy is refused, or could not be read.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The guard's connection pool could not be built.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl MemoryError {
    /// Whether Redis is configured in a way the sink refuses (exit code 2, like a bad
    /// configuration file): an evicting `maxmemory-policy`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, MemoryError::Policy(PolicyError::Evicting { .. }))
    }
}

/// Checks the eviction policy of `redis` for `mappings` (refused unless
/// `settings.allow_eviction`), then returns the guard that `readiness` reports, not yet
/// watching (see [`MemoryGuard::watch`]).
pub async fn start(
    redis: &RedisConfig,
    mappings: &[Mapping],
    settings: MemorySettings,
    readiness: &Readiness,
) -> Result<MemoryGuard, MemoryError> {
    let client = redis_client(redis).map_err(|e| PolicyError::connect(redis, &e))?;
    let check = async {
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| PolicyError::connect(redis, &e))?;
        policy::check(&mut conn, redis, mappings, settings.allow_eviction).await
    };
    let policy = tokio::time::timeout(DEFAULT_TIMEOUT, check)
        .await
        .map_err(|_| PolicyError::Connect {
            url: mapping::redact_url(&redis.url),
            reason: format!("no answer within {DEFAULT_TIMEOUT:?}"),
        })??;
    info!(
        maxmemory_policy = %policy,
        pause_at_memory_share = settings.pause_at_share,
        "Redis eviction policy checked."
    );
    let pool = redis_pool(redis)?;
    Ok(MemoryGuard::new(
        pool,
        settings.pause_at_share,
        readiness.clone(),
    ))
}
