//! `agent-cli mcp` re-reads `connectors.yaml` while it serves: on `SIGHUP`, and with
//! `--watch-config` when the file changes ([`Triggers`], shared with the sink). A file that
//! does not load is refused with its `file:line:col` errors on one log line (stderr) and
//! the server keeps the tools it has; a valid one replaces the lookups at once and the
//! client is told that the tool list changed ([`crate::mcp`]).
//!
//! The Redis connection is not re-made: a file naming another Redis is refused (restart the
//! server for that), everything else (lookups, tools, freshness bounds, sources) applies.

use mapping::{Config, ConfigErrors};
use thiserror::Error;

pub use config_reload::{Trigger, TriggerError, Triggers};

/// Why a re-read configuration was not applied.
#[derive(Debug, Error)]
pub enum Refused {
    /// The file does not load; each error as `file:line:col: what`, on one line.
    #[error("invalid configuration: {}", .0.one_line())]
    Invalid(ConfigErrors),
    /// It names another Redis (or other credentials or certificates for it).
    #[error("the redis settings changed; restart `agent-cli mcp` to connect with them")]
    Redis,
}

/// Accepts `next` in place of `current` unless its Redis settings differ.
pub fn vet(current: &Config, next: Result<Config, ConfigErrors>) -> Result<Config, Refused> {
    let next = next.map_err(Refused::Invalid)?;
    if next.redis != current.redis {
        return Err(Refused::Redis);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        mapping::load_config_str(text, "connectors.yaml", &Default::default())
    }

    const SHIPPED: &str = include_str!("../../connectors.yaml");

    #[test]
    fn new_lookups_apply_and_another_redis_or_a_bad_file_is_refused() {
        let current = load(SHIPPED).expect("shipped");
        let renamed = SHIPPED.replace("tool: get_order\n", "tool: find_order\n");
        let next = vet(&current, load(&renamed)).expect("accepted");
        assert!(next.lookup("find_order").is_some());

        let moved = SHIPPED.replace("url: redis://127.0.0.1:6379", "url: redis://10.0.0.1:6379");
        assert!(matches!(vet(&current, load(&moved)), Err(Refused::Redis)));

        let broken = SHIPPED.replace("    fields: all\n", "    fields: all\n    bogus: 1\n");
        let refused = vet(&current, load(&broken))
            .expect_err("invalid")
            .to_string();
        assert!(!refused.contains('\n'), "{refused}");
        assert!(refused.contains("connectors.yaml:"), "{refused}");
    }
}
