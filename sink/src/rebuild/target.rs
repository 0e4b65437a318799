//! The Redis side of a rebuild: the live and staging databases, the memory check, the
//! rebuild lock, and the atomic handover (`rebuild/handover.lua`: compare `sink:offsets`,
//! then `SWAPDB`).

use std::collections::BTreeMap;
use std::time::Duration;

use mapping::layout::{self, REBUILD_KEY, REBUILD_LOCK_KEY};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use thiserror::Error;

use mapping::{redact_url, RedisConfig};

use crate::connection::{redis_client, ClientError};

/// The Lua source of the handover script (ARGV layout documented at its top).
const HANDOVER_SCRIPT: &str = include_str!("handover.lua");

/// [`HANDOVER_SCRIPT`] after the layout names it reads, as constants (a handover runs once
/// per rebuild, so the text is put together then).
fn handover_script() -> String {
    format!(
        "local WATERMARK_LSN = '{}'\n{HANDOVER_SCRIPT}",
        layout::watermark::LSN
    )
}

/// How long the lock (`sink:rebuild:lock`, one rebuild per live database at a time) lives without a refresh (a killed rebuild frees it after this).
pub const LOCK_TTL: Duration = Duration::from_secs(10);

/// A Redis failure of the rebuild.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The URL does not parse.
    #[error("invalid redis url {url}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What the client reported.
        #[source]
        source: redis::RedisError,
    },
    /// No client for the configuration (certificates, URL).
    #[error("cannot connect to redis at {url}")]
    Client {
        /// The URL, password redacted.
        url: String,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
    /// A command failed.
    #[error("redis {operation} on db {db}")]
    Command {
        /// What was being done.
        operation: &'static str,
        /// The logical database.
        db: i64,
        /// What the client reported.
        #[source]
        source: redis::RedisError,
    },
    /// The staging database is the live one.
    #[error("the staging database {0} is the live database; pick another with --staging-db")]
    SameDb(i64),
    /// The server has fewer databases.
    #[error("the staging database {staging} does not exist: redis has databases 0..{}", databases - 1)]
    NoSuchDb {
        /// The requested staging database.
        staging: i64,
        /// `CONFIG GET databases`.
        databases: i64,
    },
    /// Another rebuild holds the lock.
    #[error("another rebuild of db {db} is running (lock {REBUILD_LOCK_KEY} held by {holder}, expires in {ttl_ms} ms)")]
    Locked {
        /// The live database.
        db: i64,
        /// The holder's token.
        holder: String,
        /// Time left.
        ttl_ms: i64,
    },
    /// The handover script returned something unexpected.
    #[error("unexpected reply from the handover script: {0}")]
    Reply(String),
}

/// Connections to the live and the staging database.
#[derive(Clone)]
pub struct Target {
    /// The live database number (`redis.url`).
    pub live_db: i64,
    /// The staging database number.
    pub staging_db: i64,
    /// The live Redis settings with the staging database in the URL.
    pub staging_redis: RedisConfig,
    live: MultiplexedConnection,
    staging: MultiplexedConnection,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("live_db", &self.live_db)
            .field("staging_db", &self.staging_db)
            .field("staging_redis", &self.staging_redis)
            .finish_non_exhaustive()
    }
}

/// The logical database a Redis URL names (0 when it names none).
pub fn db_of(url: &str) -> Result<i64, TargetError> {
    let client = redis::Client::open(url).map_err(|source| TargetError::Url {
        url: redact_url(url),
        source,
    })?;
    Ok(client.get_connection_info().redis_settings().db())
}

/// `url` with its database replaced by `db` (`/N` path for TCP, `?db=N` for Unix sockets).
pub fn with_db(url: &str, db: i64) -> Result<String, TargetError> {
    let bad = |source| TargetError::Url {
        url: redact_url(url),
        source,
    };
    let mut parsed = redis::parse_redis_url(url).ok_or_else(|| {
        bad(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "not a redis url",
        )))
    })?;
    if parsed.scheme().contains("unix") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "db")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        query.append_pair("db", &db.to_string());
        drop(query);
    } else {
        parsed.set_path(&format!("/{db}"));
    }
    let out = parsed.to_string();
    // Round trip: the client must read the database we wrote.
    match db_of(&out)? {
        found if found == db => Ok(out),
        _ => Err(bad(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot set the database in this url",
        )))),
    }
}

async fn connect(redis: &RedisConfig) -> Result<MultiplexedConnection, TargetError> {
    let db = db_of(&redis.url)?;
    let client = redis_client(redis).map_err(|source| TargetError::Client {
        url: redact_url(&redis.url),
        source,
    })?;
    // FLUSHDB SYNC of a large staging state takes longer than redis-rs's 500 ms default.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
        .set_response_timeout(Some(crate::connection::REDIS_RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|source| TargetError::Command {
            operation: "connect",
            db,
            source,
        })
}

impl Target {
    /// Connects to the live database of `live` and to `staging_db` (default: live + 1),
    /// checking that they differ and that the server has the staging database.
    pub async fn connect(
        live: impl Into<RedisConfig>,
        staging_db: Option<i64>,
    ) -> Result<Target, TargetError> {
        let live_redis = live.into();
        let live_db = db_of(&live_redis.url)?;
        let staging_db = staging_db.unwrap_or(live_db + 1);
        if staging_db == live_db {
            return Err(TargetError::SameDb(staging_db));
        }
        let mut live = connect(&live_redis).await?;
        // CONFIG may be renamed or forbidden (managed Redis): then SELECT tells.
        let databases: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("databases")
            .query_async(&mut live)
            .await;
        if let Ok(reply) = databases {
            if let Some(n) = reply.get(1).and_then(|n| n.parse::<i64>().ok()) {
                if staging_db < 0 || staging_db >= n {
                    return Err(TargetError::NoSuchDb {
                        staging: staging_db,
                        databases: n,
                    });
                }
            }
        }
        let staging_redis = RedisConfig {
            url: with_db(&live_redis.url, staging_db)?,
            ..live_redis
        };
        let staging = connect(&staging_redis).await?;
        Ok(Target {
            live_db,
            staging_db,
            staging_redis,
            live,
            staging,
        })
    }

    fn live_err(&self, operation: &'static str) -> impl Fn(redis::RedisError) -> TargetError {
        let db = self.live_db;
        move |source| TargetError::Command {
            operation,
            db,
            source,
        }
    }

    fn staging_err(&self, operation: &'static str) -> impl Fn(redis::RedisError) -> TargetError {
        let db = self.staging_db;
        move |source| TargetError::Command {
            operation,
            db,
            source,
        }
    }

    /// Takes the rebuild lock of the live database for `token`.
    pub async fn lock(&self, token: &str) -> Result<(), TargetError> {
        let mut conn = self.live.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(REBUILD_LOCK_KEY)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(self.live_err("SET sink:rebuild:lock"))?;
        if set.is_some() {
            return Ok(());
        }
        let holder: Option<String> = conn
            .get(REBUILD_LOCK_KEY)
            .await
            .map_err(self.live_err("GET sink:rebuild:lock"))?;
        let ttl_ms: i64 = conn
            .pttl(REBUILD_LOCK_KEY)
            .await
            .map_err(self.live_err("PTTL sink:rebuild:lock"))?;
        Err(TargetError::Locked {
            db: self.live_db,
            holder: holder.unwrap_or_else(|| "nobody (just released)".into()),
            ttl_ms,
        })
    }

    /// Extends the lock if `token` still holds it; `false` when it does not.
    pub async fn refresh_lock(&self, token: &str) -> Result<bool, TargetError> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        );
        let mut conn = self.live.clone();
        let refreshed: i64 = script
            .key(REBUILD_LOCK_KEY)
            .arg(token)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(self.live_err("refresh sink:rebuild:lock"))?;
        Ok(refreshed == 1)
    }

    /// Releases the lock if `token` still holds it.
    pub async fn unlock(&self, token: &str) -> Result<(), TargetError> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let mut conn = self.live.clone();
        script
            .key(REBUILD_LOCK_KEY)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(self.live_err("release sink:rebuild:lock"))
    }

    /// `INFO memory` and `INFO keyspace`, parsed.
    pub async fn memory(&self) -> Result<MemoryInfo, TargetError> {
        let mut conn = self.live.clone();
        let memory: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(self.live_err("INFO memory"))?;
        let keyspace: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut conn)
            .await
            .map_err(self.live_err("INFO keyspace"))?;
        Ok(MemoryInfo::parse(&memory, &keyspace))
    }

    /// Empties the staging database (synchronously: it must be empty before the replay).
    pub async fn flush_staging(&self) -> Result<(), TargetError> {
        let mut conn = self.staging.clone();
        redis::cmd("FLUSHDB")
            .arg("SYNC")
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.staging_err("FLUSHDB"))
    }

    /// Frees the old state (in the staging database after the swap) in the background.
    pub async fn flush_old_async(&self) -> Result<(), TargetError> {
        let mut conn = self.staging.clone();
        redis::cmd("FLUSHDB")
            .arg("ASYNC")
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.staging_err("FLUSHDB ASYNC"))
    }

    /// The live database's `sink:offsets`.
    pub async fn live_offsets(&self) -> Result<BTreeMap<String, i64>, TargetError> {
        let mut conn = self.live.clone();
        let raw: BTreeMap<String, String> = conn
            .hgetall(layout::OFFSETS_KEY)
            .await
            .map_err(self.live_err("HGETALL sink:offsets"))?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect())
    }

    /// Runs the handover script (see `handover.lua`).
    pub async fn handover(&self, request: &Handover<'_>) -> Result<HandoverOutcome, TargetError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(handover_script())
            .arg(4)
            .arg(REBUILD_LOCK_KEY)
            .arg(layout::OFFSETS_KEY)
            .arg(REBUILD_KEY)
            .arg(layout::OFFSETS_RUN_KEY)
            .arg(self.live_db)
            .arg(self.staging_db)
            .arg(request.token);
        cmd.arg(request.topics.len());
        for t in request.topics {
            cmd.arg(t);
        }
        cmd.arg(request.floors.len());
        for (field, floor) in request.floors {
            cmd.arg(field).arg(floor);
        }
        cmd.arg(request.meta.len());
        for (k, v) in request.meta {
            cmd.arg(k).arg(v);
        }
        cmd.arg(request.watermarks.len());
        for key in request.watermarks {
            cmd.arg(key);
        }
        let mut conn = self.live.clone();
        let run_id = crate::pipeline::server_run_id(&mut conn)
            .await
            .map_err(self.live_err("INFO server"))?;
        cmd.arg(run_id).arg(request.partitions.len());
        for field in request.partitions {
            cmd.arg(field);
        }
        let reply: Vec<String> = cmd
            .query_async(&mut conn)
            .await
            .map_err(self.live_err("handover script"))?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(HandoverOutcome::Swapped),
            Some("lock") => Ok(HandoverOutcome::LockLost(
                reply.get(1).cloned().unwrap_or_default(),
            )),
            Some("lagging") => {
                let lagging = reply[1..]
                    .chunks(3)
                    .filter_map(|c| match c {
                        [field, live, staging] => Some(Lagging {
                            field: field.clone(),
                            live: live.parse().unwrap_or(-1),
                            staging: staging.parse().unwrap_or(-1),
                        }),
                        _ => None,
                    })
                    .collect();
                Ok(HandoverOutcome::Lagging(lagging))
            }
            _ => Err(TargetError::Reply(format!("{reply:?}"))),
        }
    }
}

/// The arguments of one handover attempt.
#[derive(Debug)]
pub struct Handover<'a> {
    /// The lock token.
    pub token: &'a str,
    /// The mapped topics.
    pub topics: &'a [String],
    /// `{topic}/{partition}` -> last offset the rebuild settled.
    pub floors: &'a [(String, i64)],
    /// `sink:rebuild` fields.
    pub meta: &'a [(String, String)],
    /// `sink:watermark:{source}` of every source: the live one is carried over when ahead.
    pub watermarks: &'a [String],
    /// `{topic}/{partition}` of every partition replayed: marked whole in `sink:offsets:run`.
    pub partitions: &'a [String],
}

/// A partition where the live state is ahead of the rebuilt one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagging {
    /// `{topic}/{partition}`.
    pub field: String,
    /// Last offset applied to the live state.
    pub live: i64,
    /// Last offset applied to the rebuilt state (-1: none).
    pub staging: i64,
}

/// What the handover script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoverOutcome {
    /// The databases were swapped: readers see the new state.
    Swapped,
    /// The live sink is ahead in these partitions; nothing changed.
    Lagging(Vec<Lagging>),
    /// The lock is held by someone else (or expired): nothing changed.
    LockLost(String),
}

/// Memory figures of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    /// `used_memory`.
    pub used: u64,
    /// `maxmemory` (0: no limit).
    pub max: u64,
    /// Whether `maxmemory_policy` evicts keys (anything but `noeviction`).
    pub evicts: bool,
    /// Keys per logical database (`INFO keyspace`), by database number.
    pub keys: BTreeMap<i64, u64>,
}

impl MemoryInfo {
    /// Parses the text of `INFO memory` (as the memory guard does) and `INFO keyspace`.
    pub fn parse(memory: &str, keyspace: &str) -> MemoryInfo {
        let figures = crate::memory::MemoryInfo::parse(memory);
        let mut info = MemoryInfo {
            used: figures.used,
            max: figures.max,
            evicts: figures.policy.is_some_and(|policy| policy != "noeviction"),
            keys: BTreeMap::new(),
        };
        for line in keyspace.lines() {
            let Some((db, rest)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|k| k.parse().ok())
                .unwrap_or(0);
            info.keys.insert(n, keys);
        }
        info
    }

    fn share(&self, db: i64) -> u64 {
        let total: u64 = self.keys.values().sum();
        let keys = self.keys.get(&db).copied().unwrap_or(0);
        if total == 0 || keys == 0 {
            return 0;
        }
        if keys == total {
            return self.used;
        }
        ((self.used as u128 * keys as u128) / total as u128) as u64
    }

    /// What a rebuild of `live` into `staging` needs: the staging database is flushed first
    /// (its share is freed), then the new state takes about as much as the live one.
    pub fn estimate(&self, live: i64, staging: i64) -> MemoryEstimate {
        let need = self.share(live);
        let freed = self.share(staging);
        let peak = self.used.saturating_sub(freed).saturating_add(need);
        MemoryEstimate {
            used: self.used,
            need,
            peak,
            max: self.max,
            evicts: self.evicts,
        }
    }
}

/// The memory check's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// `used_memory` now.
    pub used: u64,
    /// Estimated size of the new state: the live database's share of `used_memory`.
    pub need: u64,
    /// Estimated `used_memory` just before the swap (both states held).
    pub peak: u64,
    /// `maxmemory` (0: no limit).
    pub max: u64,
    /// Whether Redis evicts keys when full.
    pub evicts: bool,
}

impl MemoryEstimate {
    /// Whether both states fit under `maxmemory`.
    pub fn fits(&self) -> bool {
        self.max == 0 || self.peak <= self.max
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "used_memory {} MiB, the new state needs about {} MiB, peak about {} MiB, maxmemory {}",
            mib(self.used),
            mib(self.need),
            mib(self.peak),
            if self.max == 0 {
                "unlimited".to_owned()
            } else {
                format!("{} MiB", mib(self.max))
            },
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &str = "# Memory\r\nused_memory:1000000\r\nused_memory_human:976K\r\n\
        maxmemory:1500000\r\nmaxmemory_human:1.4M\r\nmaxmemory_policy:noeviction\r\n";

    #[test]
    fn estimate_uses_the_live_share() {
        let keyspace = "# Keyspace\r\ndb0:keys=600,expires=0,avg_ttl=0\r\ndb1:keys=200,expires=0,avg_ttl=0\r\ndb5:keys=200,expires=1,avg_ttl=3\r\n";
        let info = MemoryInfo::parse(MEMORY, keyspace);
        assert_eq!(info.used, 1_000_000);
        assert_eq!(info.max, 1_500_000);
        assert!(!info.evicts);
        let e = info.estimate(0, 1);
        assert_eq!(e.need, 600_000);
        assert_eq!(e.peak, 1_000_000 - 200_000 + 600_000);
        assert!(e.fits());
        let e = info.estimate(0, 2);
        assert_eq!(e.peak, 1_600_000);
        assert!(!e.fits());
    }

    #[test]
    fn only_database_takes_all_used_memory() {
        let info = MemoryInfo::parse(MEMORY, "db3:keys=10,expires=0,avg_ttl=0\r\n");
        let e = info.estimate(3, 4);
        assert_eq!(e.need, 1_000_000);
        assert!(!e.fits());
        let unlimited = MemoryInfo {
            max: 0,
            ..info.clone()
        };
        assert!(unlimited.estimate(3, 4).fits());
        assert_eq!(info.estimate(0, 1).need, 0);
    }

    #[test]
    fn urls_get_the_staging_database() {
        assert_eq!(
            with_db("redis://127.0.0.1:6379", 1).unwrap(),
            "redis://127.0.0.1:6379/1"
        );
        assert_eq!(
            with_db("redis://:pw@h:6379/3", 4).unwrap(),
            "redis://:pw@h:6379/4"
        );
        assert_eq!(db_of("redis://h:6379/7").unwrap(), 7);
        assert_eq!(db_of("redis://h").unwrap(), 0);
        let unix = with_db("redis+unix:///tmp/r.sock?db=2", 5).unwrap();
        assert_eq!(db_of(&unix).unwrap(), 5);
    }
}
