//! `sink validate`: loads and validates the configuration and summarises it; touches neither
//! Kafka nor Redis.

use mapping::{redact_url, Config, ConfigErrors};

use crate::cli::ConfigArgs;
use crate::config::BatchSettings;

/// Loads and validates the configuration named by `args`; the summary to print on success.
pub fn validate(args: &ConfigArgs) -> Result<String, ConfigErrors> {
    let cfg = args.load(BatchSettings::default())?;
    Ok(summary(&cfg.config))
}

/// The summary `sink validate` prints on success.
fn summary(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "OK: {} mapping(s); kafka {} (group {}, dead letters to {}); registry {}; redis {}\n",
        config.mappings.len(),
        config.kafka.bootstrap_servers,
        config.kafka.group_id,
        config.kafka.dead_letter_topic,
        config.schema_registry.url,
        redact_url(&config.redis.url),
    ));
    for m in &config.mappings {
        out.push_str(&format!(
            "  {}: {} -> {} ({} index(es), {} relation(s), {} lookup(s))\n",
            m.name,
            m.topic,
            m.key.source,
            m.indexes.len(),
            m.relations.len(),
            m.lookups.len(),
        ));
    }
    out
}
