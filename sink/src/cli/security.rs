//! Credentials and certificate files on the command line or, better, in the environment:
//! the Redis ACL user and `rediss://` files, the schema registry's basic auth and CA. Each
//! replaces its `connectors.yaml` setting ([`SecurityOverrides`]). Secret values are never
//! shown in `--help` (`hide_env_values`).

use clap::Args;
use mapping::{Secret, SecurityOverrides};

/// Credentials and certificates for Redis and the schema registry.
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// Redis ACL user (replaces the URL's user).
    #[arg(long, value_name = "USER", env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password (replaces the URL's password); prefer the variable to the flag.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        value_parser = secret
    )]
    pub redis_password: Option<Secret>,
    /// PEM file of the CA that signed the Redis server's certificate (`redis.tls.ca_file`).
    #[arg(long, value_name = "PATH", env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<String>,
    /// PEM client certificate for Redis (`redis.tls.cert_file`).
    #[arg(long, value_name = "PATH", env = "REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<String>,
    /// PEM private key of the Redis client certificate (`redis.tls.key_file`).
    #[arg(long, value_name = "PATH", env = "REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<String>,
    /// Schema registry basic auth user (`schema_registry.username`).
    #[arg(long, value_name = "USER", env = "SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// Schema registry basic auth password (`schema_registry.password`); prefer the variable.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true,
        value_parser = secret
    )]
    pub schema_registry_password: Option<Secret>,
    /// Schema registry `user:password` in one value, Confluent's `basic.auth.user.info`.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        hide_env_values = true,
        value_parser = secret
    )]
    pub schema_registry_basic_auth_user_info: Option<Secret>,
    /// PEM file of a CA trusted for the registry's HTTPS (`schema_registry.ca_file`).
    #[arg(long, value_name = "PATH", env = "SCHEMA_REGISTRY_CA_FILE")]
    pub schema_registry_ca_file: Option<String>,
}

impl From<&SecurityArgs> for SecurityOverrides {
    fn from(args: &SecurityArgs) -> Self {
        SecurityOverrides {
            redis_tls_ca_file: args.redis_tls_ca_file.clone(),
            redis_tls_cert_file: args.redis_tls_cert_file.clone(),
            redis_tls_key_file: args.redis_tls_key_file.clone(),
            redis_username: args.redis_username.clone(),
            redis_password: args.redis_password.clone(),
            schema_registry_username: args.schema_registry_username.clone(),
            schema_registry_password: args.schema_registry_password.clone(),
            schema_registry_basic_auth_user_info: args.schema_registry_basic_auth_user_info.clone(),
            schema_registry_ca_file: args.schema_registry_ca_file.clone(),
        }
    }
}

/// Parses a secret argument straight into a [`Secret`], so that the parsed arguments'
/// `Debug` never shows it.
fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}
