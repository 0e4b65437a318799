//! Reloading `connectors.yaml` while `sink run` keeps running (`SIGHUP`, or a change of the
//! file with `--watch-config`): the file is read again exactly as at start-up, then vetted
//! here against the running configuration. [`crate::run`] applies an accepted one by
//! draining the pipeline and starting it again with it.
//!
//! # Layout
//!
//! - `key_changes.rs`: the pure rule of what a reload may not change (the keys of rows
//!   already written), [`key_changes`].
//! - What asks for a reload (the signal, the file watch) is the `config-reload` crate's
//!   [`Triggers`], shared with agent-cli.
//!
//! # What is refused
//!
//! An invalid file (its `file:line:col` errors, on one line); a change of the keys of
//! existing rows ([`KeyChange`]: only `sink rebuild` can re-key them); for the exclusive
//! writer, a mapping with `ttl_seconds`. The sink then keeps running on what it runs.

mod key_changes;

use deadpool_redis::Pool;
use mapping::{layout, ConfigErrors, RedisConfig};
use redis::IntoConnectionInfo;
use thiserror::Error;

use crate::apply::WriterId;
use crate::config::{SinkConfig, Writer};

pub use config_reload::{Trigger, TriggerError, Triggers};
pub use key_changes::{key_changes, KeyChange};

/// Why a re-read configuration was not applied.
#[derive(Debug, Error)]
pub enum Refused {
    /// The file does not load; each error as `file:line:col: what`, joined on one line.
    #[error("invalid configuration: {}", .0.one_line())]
    Invalid(ConfigErrors),
    /// It would change the keys of existing rows.
    #[error(
        "the new configuration would change the keys of existing rows ({}); \
         run `sink rebuild` with it to re-key them, then restart the sink",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    KeyChanging(Vec<KeyChange>),
    /// The exclusive writer cannot apply `ttl_seconds`.
    #[error(
        "the exclusive writer does not support ttl_seconds, which mapping `{0}` sets; \
         run the sink with --writer shared"
    )]
    ExclusiveTtl(String),
    /// What the reload must know from Redis could not be read.
    #[error("cannot read {what} of mapping `{mapping}`")]
    Redis {
        /// `whether rows exist` or `the lease`.
        what: &'static str,
        /// The mapping.
        mapping: String,
        /// What Redis answered.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis pool could not give a connection for that check.
    #[error("cannot reach redis to vet the new configuration")]
    Pool(#[source] deadpool_redis::PoolError),
    /// Another exclusive sink holds the lease of a mapping the new file adds: this sink
    /// would stand by for it, applying nothing meanwhile.
    #[error("exclusive sink `{holder}` holds the lease of added mapping `{mapping}`")]
    LeaseHeld {
        /// The added mapping.
        mapping: String,
        /// The other writer's id.
        holder: String,
    },
    /// The pipeline could not be set up with it (a service unreachable, a client not built).
    #[error("cannot start the pipeline with the new configuration")]
    Start(#[source] crate::pipeline::StartError),
}

/// Accepts `next` (a freshly loaded file) in place of `current`, or says why not. `pool`
/// reaches the running database: a removed mapping is refused only if `sink:rows:{mapping}`
/// exists there.
pub async fn vet(
    current: &SinkConfig,
    next: SinkConfig,
    pool: &Pool,
) -> Result<SinkConfig, Refused> {
    let same_redis = same_database(&current.config.redis, &next.config.redis);
    let mut kept = Vec::new();
    for change in key_changes(&current.config, &next.config, same_redis) {
        // A removed mapping that never wrote a row leaves nothing behind.
        if let KeyChange::RemovedMapping { mapping } = &change {
            if !has_rows(pool, mapping).await? {
                continue;
            }
        }
        kept.push(change);
    }
    if !kept.is_empty() {
        return Err(Refused::KeyChanging(kept));
    }
    if let Writer::Exclusive { .. } = current.writer {
        if let Some(m) = next
            .config
            .mappings
            .iter()
            .find(|m| m.ttl_seconds.is_some())
        {
            return Err(Refused::ExclusiveTtl(m.name.clone()));
        }
    }
    Ok(next.with_writer(current.writer))
}

/// Exclusive writer `writer`: refuses `next` when another exclusive sink holds the lease
/// (`sink:writer:{mapping}`) of a mapping it adds.
pub async fn check_leases(
    current: &SinkConfig,
    next: &SinkConfig,
    writer: &WriterId,
    pool: &Pool,
) -> Result<(), Refused> {
    let added = next
        .config
        .mappings
        .iter()
        .filter(|m| current.config.mapping(&m.name).is_none());
    let mut conn = pool.get().await.map_err(Refused::Pool)?;
    for mapping in added {
        let holder: Option<String> = redis::cmd("GET")
            .arg(layout::writer_key(&mapping.name))
            .query_async(&mut conn)
            .await
            .map_err(|source| Refused::Redis {
                what: "the lease",
                mapping: mapping.name.clone(),
                source,
            })?;
        match holder {
            Some(holder) if holder != writer.as_str() => {
                return Err(Refused::LeaseHeld {
                    mapping: mapping.name.clone(),
                    holder,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the sink stored rows of `mapping` (`sink:rows:{mapping}` exists).
async fn has_rows(pool: &Pool, mapping: &str) -> Result<bool, Refused> {
    let mut conn = pool.get().await.map_err(Refused::Pool)?;
    redis::cmd("EXISTS")
        .arg(layout::rows_key(mapping))
        .query_async::<bool>(&mut conn)
        .await
        .map_err(|source| Refused::Redis {
            what: "whether rows exist",
            mapping: mapping.to_owned(),
            source,
        })
}

/// Whether two Redis settings name the same server, logical database and user (a changed
/// password or certificate does not make another database). An unparsable URL is another.
fn same_database(a: &RedisConfig, b: &RedisConfig) -> bool {
    let target = |config: &RedisConfig| {
        let info = config.url.as_str().into_connection_info().ok()?;
        let settings = info.redis_settings();
        let user = config
            .username
            .clone()
            .or_else(|| settings.username().map(str::to_owned));
        Some((info.addr().to_string(), settings.db(), user))
    };
    match (target(a), target(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::BatchSettings;
    use crate::connection::unreachable_pool;

    const SHIPPED: &str = include_str!("../../connectors.yaml");

    fn sink_config(text: &str, writer: Writer) -> SinkConfig {
        let config =
            mapping::load_config_str(text, "connectors.yaml", &Default::default()).expect("loads");
        SinkConfig::new(config, &[], BatchSettings::default()).with_writer(writer)
    }

    #[tokio::test]
    async fn vetting_keeps_the_writer_and_refuses_key_changes_and_exclusive_ttls() {
        let exclusive = Writer::Exclusive {
            lease: Duration::from_secs(10),
            max_memory: crate::apply::DEFAULT_MAX_WRITER_MEMORY,
        };
        let current = sink_config(SHIPPED, exclusive);
        let pool = unreachable_pool();

        let lookup = SHIPPED.replace("tool: get_order\n", "tool: find_order\n");
        let accepted = vet(&current, sink_config(&lookup, Writer::Shared), &pool)
            .await
            .expect("a new lookup applies");
        assert_eq!(accepted.writer, exclusive);

        let rekeyed = SHIPPED.replace("key: \"order:{id}\"", "key: \"o:{id}\"");
        let refused = vet(&current, sink_config(&rekeyed, exclusive), &pool)
            .await
            .expect_err("key change");
        assert!(matches!(refused, Refused::KeyChanging(_)));
        assert!(
            refused.to_string().contains("run `sink rebuild`"),
            "{refused}"
        );

        let ttl = SHIPPED.replace("    # ttl_seconds: 86400", "    ttl_seconds: 86400");
        let refused = vet(&current, sink_config(&ttl, exclusive), &pool)
            .await
            .expect_err("exclusive ttl");
        assert!(matches!(refused, Refused::ExclusiveTtl(ref m) if m == "customers"));
        let shared = sink_config(SHIPPED, Writer::Shared);
        assert!(vet(&shared, sink_config(&ttl, Writer::Shared), &pool)
            .await
            .is_ok());
    }

    #[test]
    fn the_database_is_the_server_the_db_and_the_user() {
        let same = |a: &str, b: &str| same_database(&a.into(), &b.into());
        assert!(same("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/0"));
        assert!(same(
            "redis://:old@127.0.0.1:6379/3",
            "redis://:new@127.0.0.1:6379/3"
        ));
        assert!(!same(
            "redis://127.0.0.1:6379/3",
            "redis://127.0.0.1:6379/4"
        ));
        assert!(!same("redis://127.0.0.1:6379", "redis://127.0.0.1:6380"));
        assert!(!same(
            "redis://a@127.0.0.1:6379",
            "redis://b@127.0.0.1:6379"
        ));
        assert!(!same("redis://127.0.0.1:6379", "not a url"));
    }

    #[test]
    fn invalid_files_are_refused_on_one_line() {
        let errors = mapping::load_config_str(
            "kafka: {}\nmappings: nope\n",
            "connectors.yaml",
            &Default::default(),
        )
        .expect_err("invalid");
        let text = Refused::Invalid(errors).to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("connectors.yaml:"), "{text}");
    }
}
