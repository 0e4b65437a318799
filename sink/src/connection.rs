//! Redis connections: [`redis_client`] turns the configured [`RedisConfig`] (URL, `rediss://`
//! certificates, ACL user) into a client, for the health check and the rebuild; [`redis_pool`]
//! builds on it one pool of multiplexed connections per database, with timeouts sized for the
//! sink's large pipelines. The pipeline's applier and the rebuild's staging database both get
//! theirs here.

use std::time::Duration;

use mapping::{redact_url, RedisConfig};
pub use redis_connect::{client as redis_client, ClientError};
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
    /// No client for the configuration.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The pool could not be built.
    #[error("cannot build the pool")]
    Build(#[source] deadpool_redis::BuildError),
}

/// A pool of multiplexed Redis connections to `redis` (a [`RedisConfig`] or a bare URL)
/// with [`REDIS_RESPONSE_TIMEOUT`].
pub fn redis_pool(redis: impl Into<RedisConfig>) -> Result<deadpool_redis::Pool, PoolError> {
    let config = &redis.into();
    let fail = |source| PoolError {
        url: redact_url(&config.url),
        source,
    };
    let client = redis_client(config).map_err(|e| fail(e.into()))?;
    let connection = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
    // The client's connection info carries the credentials and the TLS parameters.
    let manager =
        deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), connection)
            .map_err(|e| fail(PoolErrorKind::Client(ClientError::Url(e))))?;
    deadpool_redis::Pool::builder(manager)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| fail(PoolErrorKind::Build(e)))
}

/// A pool whose Redis never answers (nothing listens on port 1): for unit tests that must
/// not reach Redis, or that test what happens when it does not answer.
#[cfg(test)]
pub(crate) fn unreachable_pool() -> deadpool_redis::Pool {
    let manager = deadpool_redis::Manager::new("redis://127.0.0.1:1").expect("url");
    deadpool_redis::Pool::builder(manager)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .expect("pool")
}

#[cfg(test)]
mod tests {
    use mapping::{RedisTls, Secret};

    use super::*;

    #[test]
    fn unreadable_certificate_files_are_named_and_secrets_are_not() {
        let config = RedisConfig {
            url: "rediss://sink:url-secret@127.0.0.1:6380".into(),
            tls: RedisTls {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..RedisTls::default()
            },
            username: None,
            password: Some(Secret::new("env-secret")),
        };
        let err = redis_pool(&config).unwrap_err();
        let text = mapping::one_line(&err);
        assert_eq!(
            text,
            "cannot set up a connection pool for redis at rediss://sink:***@127.0.0.1:6380: \
             cannot read redis.tls.ca_file /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        assert!(!format!("{err:?}").contains("secret"), "{err:?}");
    }
}
