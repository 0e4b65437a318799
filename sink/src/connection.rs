//! Redis connections for writing: one pool of multiplexed connections per database, with
//! timeouts sized for the sink's large pipelines. The pipeline's applier and the rebuild's
//! staging database both get theirs here.

use std::time::Duration;

use mapping::redact_url;
use thiserror::Error;

/// How long one Redis reply may take. A pipeline of a few thousand scripts takes well under
/// a second, but redis-rs's default of 500 ms is too tight on a loaded machine: a timeout
/// makes the whole batch go again, which takes as long again.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis connection pool could not be set up.
#[derive(Debug, Error)]
#[error("cannot set up a connection pool for redis at {url}")]
pub struct PoolError {
    /// The Redis URL, password redacted.
    pub url: String,
    /// What went wrong.
    #[source]
    pub source: PoolErrorKind,
}

/// Why the Redis pool could not be built.
#[derive(Debug, Error)]
pub enum PoolErrorKind {
    /// The URL does not parse.
    #[error("invalid redis url")]
    Url(#[source] redis::RedisError),
    /// The pool could not be built.
    #[error("cannot build the pool")]
    Build(#[source] deadpool_redis::BuildError),
}

/// A pool of multiplexed Redis connections with [`REDIS_RESPONSE_TIMEOUT`].
pub fn redis_pool(url: &str) -> Result<deadpool_redis::Pool, PoolError> {
    let fail = |source| PoolError {
        url: redact_url(url),
        source,
    };
    let connection = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
    let manager = deadpool_redis::Manager::new_with_config(url, connection)
        .map_err(|e| fail(PoolErrorKind::Url(e)))?;
    deadpool_redis::Pool::builder(manager)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| fail(PoolErrorKind::Build(e)))
}
