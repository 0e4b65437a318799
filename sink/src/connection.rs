//! Redis connections: [`redis_client`] turns the configured [`RedisConfig`] (URL, `rediss://`
//! certificates, ACL user) into a client, for the health check and the rebuild; [`redis_pool`]
//! builds on it one pool of multiplexed connections per database, with timeouts sized for the
//! sink's large pipelines. The pipeline's applier and the rebuild's staging database both get
//! theirs here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mapping::{redact_url, RedisConfig};
use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
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

/// A Redis client could not be made from the configuration.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL does not parse (the client's message never repeats the URL).
    #[error("invalid redis url")]
    Url(#[source] redis::RedisError),
    /// A certificate or key file cannot be read.
    #[error("cannot read {setting} {}", path.display())]
    ReadFile {
        /// The setting naming the file, e.g. `redis.tls.ca_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificates are unusable (not PEM, key not matching).
    #[error("cannot set up tls with redis.tls")]
    Tls(#[source] redis::RedisError),
}

/// A client for `config`: its URL, with `REDIS_USERNAME`/`REDIS_PASSWORD` replacing the URL's
/// credentials and, for `rediss://`, the configured CA and client certificate. Connects
/// nowhere yet.
pub fn redis_client(config: &RedisConfig) -> Result<redis::Client, ClientError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(ClientError::Url)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let tls = &config.tls;
    if tls.ca_file.is_none() && tls.cert_file.is_none() {
        return redis::Client::open(info).map_err(ClientError::Url);
    }
    let read = |setting, path: &Path| {
        std::fs::read(path).map_err(|source| ClientError::ReadFile {
            setting,
            path: path.to_owned(),
            source,
        })
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read("redis.tls.ca_file", path)?),
        None => None,
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("redis.tls.cert_file", cert)?,
            client_key: read("redis.tls.key_file", key)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(ClientError::Tls)
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
