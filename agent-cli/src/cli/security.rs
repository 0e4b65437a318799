//! Redis credentials and certificate files on the command line or, better, in the
//! environment; each replaces its `connectors.yaml` setting ([`SecurityOverrides`]). The
//! password is never shown in `--help` (`hide_env_values`).

use clap::Args;
use mapping::{Secret, SecurityOverrides};

/// The Redis ACL user and the files of a `rediss://` connection.
#[derive(Debug, Clone, Default, Args)]
pub struct RedisSecurityArgs {
    /// Redis ACL user (replaces the URL's user); a read-only user is enough.
    #[arg(long, global = true, value_name = "USER", env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password (replaces the URL's password); prefer the variable to the flag.
    #[arg(
        long,
        global = true,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        value_parser = secret
    )]
    pub redis_password: Option<Secret>,
    /// PEM file of the CA that signed the Redis server's certificate (`redis.tls.ca_file`).
    #[arg(long, global = true, value_name = "PATH", env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<String>,
    /// PEM client certificate for Redis (`redis.tls.cert_file`).
    #[arg(long, global = true, value_name = "PATH", env = "REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<String>,
    /// PEM private key of the Redis client certificate (`redis.tls.key_file`).
    #[arg(long, global = true, value_name = "PATH", env = "REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<String>,
}

impl From<&RedisSecurityArgs> for SecurityOverrides {
    fn from(args: &RedisSecurityArgs) -> Self {
        SecurityOverrides {
            redis_tls_ca_file: args.redis_tls_ca_file.clone(),
            redis_tls_cert_file: args.redis_tls_cert_file.clone(),
            redis_tls_key_file: args.redis_tls_key_file.clone(),
            redis_username: args.redis_username.clone(),
            redis_password: args.redis_password.clone(),
            ..SecurityOverrides::default()
        }
    }
}

/// Parses a secret argument straight into a [`Secret`], so that the parsed arguments'
/// `Debug` never shows it.
fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}
