//! The Redis client both binaries connect with, made from the validated [`RedisConfig`]: its
//! URL, the ACL user and password from `REDIS_USERNAME`/`REDIS_PASSWORD` (replacing the
//! URL's), and for `rediss://` the CA and client certificate of `redis.tls`. A crate of its
//! own because `mapping` does no I/O (this reads certificate files) and the sink and agent-cli
//! must connect alike (README, "Security").

use std::path::{Path, PathBuf};

use mapping::RedisConfig;
use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
use thiserror::Error;

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
pub fn client(config: &RedisConfig) -> Result<redis::Client, ClientError> {
    client_with(config, None)
}

/// [`client`], speaking RESP3 whatever the URL says: for connections that receive pushes
/// (agent-cli's read cache learns of changed keys that way).
pub fn client_resp3(config: &RedisConfig) -> Result<redis::Client, ClientError> {
    client_with(config, Some(redis::ProtocolVersion::RESP3))
}

fn client_with(
    config: &RedisConfig,
    protocol: Option<redis::ProtocolVersion>,
) -> Result<redis::Client, ClientError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(ClientError::Url)?;
    let mut settings = info.redis_settings().clone();
    if let Some(protocol) = protocol {
        settings = settings.set_protocol(protocol);
    }
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
