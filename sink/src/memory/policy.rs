//! The start-up check of Redis's `maxmemory-policy`. An evicting Redis drops keys when it
//! reaches `maxmemory` and tells nobody: a row hash, an index entry or the sink's bookkeeping
//! would vanish while the sink believes it applied them, and readers would get "not found"
//! for rows the database has. So the sink refuses to start (exit code 2) when the policy may
//! evict its keys:
//!
//! - every `allkeys-*` policy (any key may go), and any policy this sink does not know;
//! - a `volatile-*` policy when a mapping sets `ttl_seconds`: those rows carry a TTL, so
//!   Redis may evict them before they expire. Without such mappings the only keys of the
//!   sink with a TTL are the rebuild lock and the exclusive writer's lease, whose loss is
//!   detected (the handover checks its lock token, the exclusive writer watches its lease
//!   and stops when another sink holds it), so `volatile-*` is accepted: it then refuses
//!   writes with `OOM` like `noeviction`, and the sink pauses.
//!
//! `--allow-eviction` starts anyway, with a warning. The policy is read with `CONFIG GET`,
//! or from `INFO memory` where the sink's ACL user may not run `CONFIG` (managed Redis).

use mapping::{one_line, redact_url, Mapping, RedisConfig};
use redis::aio::ConnectionLike;
use thiserror::Error;
use tracing::{info, warn};

use super::info::MemoryInfo;
use crate::health::redis_outage;

/// Which keys a `maxmemory-policy` may evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// `noeviction`: writes fail with `OOM` instead.
    Never,
    /// `volatile-*`: only keys with a TTL.
    KeysWithTtl,
    /// `allkeys-*`, or a policy the sink does not know: any key.
    AnyKey,
}

impl Eviction {
    /// What `policy` may evict.
    pub fn of(policy: &str) -> Eviction {
        if policy == "noeviction" {
            Eviction::Never
        } else if policy.starts_with("volatile-") {
            Eviction::KeysWithTtl
        } else {
            Eviction::AnyKey
        }
    }
}

/// Why the sink does not start with this Redis.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The policy may evict the sink's keys.
    #[error("redis at {url} has maxmemory-policy `{policy}`: {risk}; set `maxmemory-policy noeviction` (CONFIG SET maxmemory-policy noeviction, and in redis.conf), with which the sink pauses while redis is full, or pass --allow-eviction (SINK_ALLOW_EVICTION=true) to start anyway")]
    Evicting {
        /// The Redis URL, password redacted.
        url: String,
        /// The policy.
        policy: String,
        /// What it may evict.
        risk: String,
    },
    /// Neither `CONFIG GET` nor `INFO memory` told the policy.
    #[error("cannot read maxmemory-policy of redis at {url}: CONFIG GET failed ({config}) and INFO memory {info}; allow the sink's user `CONFIG GET` or `INFO`, or pass --allow-eviction (SINK_ALLOW_EVICTION=true) to start without the check")]
    Unreadable {
        /// The Redis URL, password redacted.
        url: String,
        /// Why `CONFIG GET` failed.
        config: String,
        /// Why `INFO memory` did not tell.
        info: String,
    },
    /// No connection for the check.
    #[error("cannot connect to redis at {url} to check its maxmemory-policy: {reason}")]
    Connect {
        /// The Redis URL, password redacted.
        url: String,
        /// Why, as one line.
        reason: String,
    },
}

impl PolicyError {
    pub(super) fn connect(redis: &RedisConfig, error: &dyn std::error::Error) -> PolicyError {
        PolicyError::Connect {
            url: redact_url(&redis.url),
            reason: one_line(error),
        }
    }
}

/// Reads the policy of `redis` (on `conn`) and refuses it when it may evict keys of
/// `mappings`; with `allow_eviction` it warns instead. Returns the policy (`unknown` when it
/// could not be read and that is allowed).
pub(super) async fn check(
    conn: &mut impl ConnectionLike,
    redis: &RedisConfig,
    mappings: &[Mapping],
    allow_eviction: bool,
) -> Result<String, PolicyError> {
    let url = redact_url(&redis.url);
    let policy = match read(conn).await {
        Ok(policy) => policy,
        // Redis went away between the health check and this read: an outage, waited for
        // like one found by the health check, not a policy the sink cannot read.
        Err(Unread::Outage(reason)) => return Err(PolicyError::Connect { url, reason }),
        Err(Unread::Refused(config, info)) if allow_eviction => {
            warn!(config_error = %config, info_error = %info, "Cannot read redis maxmemory-policy; starting without the check (--allow-eviction).");
            return Ok("unknown".to_owned());
        }
        Err(Unread::Refused(config, info)) => {
            return Err(PolicyError::Unreadable { url, config, info })
        }
    };
    let with_ttl: Vec<&str> = mappings
        .iter()
        .filter(|m| m.ttl_seconds.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let Some(risk) = risk(&policy, &with_ttl) else {
        if Eviction::of(&policy) == Eviction::KeysWithTtl {
            info!(maxmemory_policy = %policy, "No mapping sets ttl_seconds, so redis cannot evict rows: it refuses writes with OOM when full, and the sink pauses.");
        }
        return Ok(policy);
    };
    if allow_eviction {
        warn!(maxmemory_policy = %policy, %risk, "Redis may evict the sink's keys; starting anyway (--allow-eviction).");
        return Ok(policy);
    }
    Err(PolicyError::Evicting { url, policy, risk })
}

/// What `policy` may do to the sink's keys, when it may evict any; `with_ttl` names the
/// mappings that set `ttl_seconds`.
fn risk(policy: &str, with_ttl: &[&str]) -> Option<String> {
    match Eviction::of(policy) {
        Eviction::Never => None,
        Eviction::KeysWithTtl if with_ttl.is_empty() => None,
        Eviction::KeysWithTtl => Some(format!(
            "redis evicts keys that have a TTL when it reaches maxmemory, and the rows of {} {} have one (ttl_seconds): they could vanish before they expire, silently",
            if with_ttl.len() == 1 { "mapping" } else { "mappings" },
            with_ttl.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
        )),
        Eviction::AnyKey if policy.starts_with("allkeys-") => Some(
            "redis evicts any key when it reaches maxmemory, so rows, index entries and the sink's bookkeeping could vanish silently".to_owned(),
        ),
        Eviction::AnyKey => Some(
            "the sink does not know this policy and assumes it evicts any key when redis reaches maxmemory".to_owned(),
        ),
    }
}

/// Why the policy could not be read.
enum Unread {
    /// Redis did not answer ([`crate::health::redis_outage`]), as one line.
    Outage(String),
    /// Neither `CONFIG GET` nor `INFO memory` told it: why, as one line each.
    Refused(String, String),
}

/// The policy from `CONFIG GET`, else from `INFO memory`.
async fn read(conn: &mut impl ConnectionLike) -> Result<String, Unread> {
    let config = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<std::collections::HashMap<String, String>>(conn)
        .await;
    let config = match config {
        Ok(mut reply) => match reply.remove("maxmemory-policy") {
            Some(policy) => return Ok(policy),
            None => "no maxmemory-policy in the reply".to_owned(),
        },
        Err(e) if redis_outage(&e) => return Err(Unread::Outage(one_line(&e))),
        Err(e) => one_line(&e),
    };
    match MemoryInfo::read(conn).await {
        Ok(MemoryInfo {
            policy: Some(policy),
            ..
        }) => Ok(policy),
        Ok(_) => Err(Unread::Refused(
            config,
            "has no maxmemory_policy field".to_owned(),
        )),
        Err(e) if redis_outage(&e) => Err(Unread::Outage(one_line(&e))),
        Err(e) => Err(Unread::Refused(
            config,
            format!("failed ({})", one_line(&e)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicting_policies_are_named() {
        assert_eq!(Eviction::of("noeviction"), Eviction::Never);
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "something-new",
        ] {
            assert_eq!(Eviction::of(policy), Eviction::AnyKey, "{policy}");
            assert!(risk(policy, &[]).is_some(), "{policy}");
        }
        for policy in [
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert_eq!(Eviction::of(policy), Eviction::KeysWithTtl, "{policy}");
            assert_eq!(risk(policy, &[]), None, "{policy}");
        }
        assert_eq!(risk("noeviction", &["customers"]), None);
        assert_eq!(
            risk("volatile-ttl", &["customers", "orders"]).unwrap(),
            "redis evicts keys that have a TTL when it reaches maxmemory, and the rows of mappings `customers`, `orders` have one (ttl_seconds): they could vanish before they expire, silently"
        );
    }

    #[test]
    fn refusal_names_the_setting_its_value_and_the_fix() {
        let e = PolicyError::Evicting {
            url: "redis://:***@h:6379".into(),
            policy: "allkeys-lru".into(),
            risk: risk("allkeys-lru", &[]).unwrap(),
        };
        let text = e.to_string();
        assert!(text.contains("maxmemory-policy `allkeys-lru`"), "{text}");
        assert!(
            text.contains("CONFIG SET maxmemory-policy noeviction"),
            "{text}"
        );
        assert!(text.contains("--allow-eviction"), "{text}");
    }
}
