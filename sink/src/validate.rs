//! `sink validate`: loads and validates the configuration and summarises it; touches neither
//! Kafka nor Redis.

use mapping::{redact_url, Config, ConfigErrors, RedisConfig, SchemaRegistryConfig};

use crate::cli::ConfigArgs;

/// Loads and validates the configuration named by `args`; the summary to print on success.
pub fn validate(args: &ConfigArgs) -> Result<String, ConfigErrors> {
    let cfg = args.load(None)?;
    Ok(summary(&cfg.config))
}

/// The summary `sink validate` prints on success.
fn summary(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "OK: {} mapping(s); kafka {} (group {}, dead letters to {}); registry {}{}; redis {}{}\n",
        config.mappings.len(),
        config.kafka.bootstrap_servers,
        config.kafka.group_id,
        config.kafka.dead_letter_topic,
        config.schema_registry.url,
        registry_auth(&config.schema_registry),
        redact_url(&config.redis.url),
        redis_auth(&config.redis),
    ));
    out.push_str(&format!(
        "  batches of at most {} bytes of keys and values\n",
        config.batch.max_bytes
    ));
    for m in &config.mappings {
        out.push_str(&format!(
            "  {}: {} -> {} ({} index(es), {} relation(s), {} aggregate(s), {} search(es), {} lookup(s))\n",
            m.name,
            m.topic,
            m.key.source,
            m.indexes.len(),
            m.relations.len(),
            m.aggregates.len(),
            m.search.len(),
            m.lookups.len(),
        ));
    }
    out
}

/// How the registry is reached, for the summary: the user, never the password.
fn registry_auth(registry: &SchemaRegistryConfig) -> String {
    let mut parts = Vec::new();
    if let Some(user) = &registry.username {
        parts.push(format!("basic auth as {user}"));
    }
    if let Some(ca) = &registry.ca_file {
        parts.push(format!("ca {}", ca.display()));
    }
    in_parentheses(&parts)
}

/// How Redis is reached, for the summary: the user and the certificate files, never the
/// password.
fn redis_auth(redis: &RedisConfig) -> String {
    let mut parts = Vec::new();
    if let Some(user) = &redis.username {
        parts.push(format!("as {user}"));
    }
    if let Some(ca) = &redis.tls.ca_file {
        parts.push(format!("ca {}", ca.display()));
    }
    if let Some(cert) = &redis.tls.cert_file {
        parts.push(format!("client certificate {}", cert.display()));
    }
    in_parentheses(&parts)
}

fn in_parentheses(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}
