//! The exclusive writer's lease on its mappings: one key per mapping,
//! `sink:writer:{mapping}`, holding the writer's id, with an expiry the writer keeps renewing.
//!
//! An exclusive sink ([`crate::apply::Applier::exclusive`]) decides changes against bookkeeping it
//! holds in memory, so it must be the only one writing its mappings' keys: a second
//! exclusive sink for them waits for the lease (a standby that takes over within one lease
//! time when the holder dies), and the change script refuses to run while an exclusive
//! writer holds one of its mappings (`EXCLUSIVE` error, see `change.lua`), so a shared sink
//! never writes behind the holder's back: it stands by until the lease is free
//! ([`exclusive_holder`], `run/appliers.rs`). The lease is per
//! mapping, as the bookkeeping is: sinks of other mappings share the database freely.
//!
//! `--writer auto` takes the lease only where no other sink announces itself as a shared
//! writer of the mappings ([`Lease::yielding_to_shared_sinks`], `script/announce.rs`): it
//! never shuts out the shared sinks already running, and gives the lease up to one that
//! announces itself later.
//!
//! The keys also detect what replaces the database under the writer: a rebuild's `SWAPDB`
//! touches every watched key, and the rebuilt database holds no lease. Each batch watches
//! them and checks that they still name this writer before its transaction (see
//! `writer.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::Pool;
use mapping::{layout, Mapping};
use redis::aio::ConnectionLike;

use crate::apply::ApplyError;

/// How long the lease lasts without renewal unless configured otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Keeps the lease when this writer holds all of its keys (the first ARGV[3] of KEYS), takes
/// the free ones when nobody else holds any, unless, while taking, one of the rest of KEYS
/// (shared sinks' announcements, [`layout::shared_key`]) holds another sink's announcement
/// that has not expired. ARGV[1] writer id, ARGV[2] time to live in ms, ARGV[3] the number
/// of lease keys. Returns 1 (held and renewed), 2 (some were free, now taken), the id of
/// another holder, or `{id}`: the id of a shared sink that announced itself (nothing taken).
const TAKE_SCRIPT: &str = r"
local n = tonumber(ARGV[3])
local held = 0
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then
    held = held + 1
  elseif holder then
    return holder
  end
end
if held < n and #KEYS > n then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  for i = n + 1, #KEYS do
    for _, sharer in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], now, '+inf')) do
      if sharer ~= ARGV[1] then return {sharer} end
    end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if held == n then return 1 end
return 2
";

/// Gives up the keys of KEYS this writer holds. ARGV[1] writer id.
const RELEASE_SCRIPT: &str = r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
";

/// What taking or renewing the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holding {
    /// This writer held it; renewed.
    Kept,
    /// It was (partly) free (first start, lapsed, or the database was swapped); taken now.
    Taken,
    /// Another writer holds it.
    HeldBy(String),
    /// A lease that yields to shared sinks ([`Lease::yielding_to_shared_sinks`]) was not
    /// held, and a shared sink of one of its mappings announced itself (its id): nothing
    /// was taken.
    SharedSinks(String),
}

/// An exclusive writer's identity: the value of the lease keys it holds. `sink run` keeps
/// one across configuration reloads, so that the writer of the next configuration holds
/// the lease of the last one without a gap (see [`crate::run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterId(String);

impl WriterId {
    /// A new identity: host, process id and the current time name it.
    pub fn new() -> WriterId {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        WriterId(format!("{host}:{}:{started:x}", std::process::id()))
    }

    /// The value of the lease keys this writer holds.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WriterId {
    fn default() -> Self {
        WriterId::new()
    }
}

/// This process's identity as a writer, its mappings' lease keys and its lease time.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    id: String,
    keys: Vec<String>,
    /// The shared sinks' announcements of the same mappings ([`layout::shared_key`]).
    shared_keys: Vec<String>,
    /// Whether an announcement keeps this lease from being taken (`--writer auto`);
    /// `--writer exclusive` takes it regardless.
    yields: bool,
    ttl: Duration,
}

impl Lease {
    /// A lease on `mappings` for `writer`.
    pub(crate) fn new<'a>(
        writer: &WriterId,
        mappings: impl IntoIterator<Item = &'a str>,
        ttl: Duration,
    ) -> Lease {
        let mappings: Vec<&str> = mappings.into_iter().collect();
        Lease {
            id: writer.0.clone(),
            keys: mappings.iter().copied().map(layout::writer_key).collect(),
            shared_keys: mappings.iter().copied().map(layout::shared_key).collect(),
            yields: false,
            ttl: ttl.max(Duration::from_millis(300)),
        }
    }

    /// The same lease, not taken while another sink announces itself as a shared writer of
    /// one of its mappings (`sink:shared:{mapping}`): [`Lease::take`] then answers
    /// [`Holding::SharedSinks`]. For `--writer auto`, which must not shut out the shared
    /// sinks already writing.
    pub(crate) fn yielding_to_shared_sinks(mut self) -> Lease {
        self.yields = true;
        self
    }

    /// The value of the lease keys while this writer holds them.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The lease keys.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The lease time in milliseconds, as `PEXPIRE` takes it.
    pub(crate) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// How often an idle writer renews: a third of the lease time, so that two renewals
    /// may be late before it lapses.
    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Adds the renewal of every lease key to `pipe` (inside a batch's transaction).
    pub(crate) fn renew_in(&self, pipe: &mut redis::Pipeline) {
        for key in &self.keys {
            pipe.cmd("PEXPIRE").arg(key).arg(self.ttl_ms());
        }
    }

    /// Renews the lease if this writer holds it, takes it if it is free (and, for a lease
    /// yielding to shared sinks, none announced itself).
    pub(crate) async fn take(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Holding> {
        let script = redis::Script::new(TAKE_SCRIPT);
        let mut script = script.prepare_invoke();
        let yield_to: &[String] = if self.yields { &self.shared_keys } else { &[] };
        script
            .key(&self.keys)
            .key(yield_to)
            .arg(&self.id)
            .arg(self.ttl_ms())
            .arg(self.keys.len());
        let reply: redis::Value = script.invoke_async(conn).await?;
        Ok(match reply {
            redis::Value::Int(1) => Holding::Kept,
            redis::Value::Int(_) => Holding::Taken,
            redis::Value::Array(sharer) => Holding::SharedSinks(
                redis::from_redis_value::<(String,)>(redis::Value::Array(sharer))?.0,
            ),
            other => Holding::HeldBy(redis::from_redis_value::<String>(other)?),
        })
    }

    /// Gives the lease up (at shutdown, so that a standby or a restarted sink need not wait
    /// for it to lapse).
    pub(crate) async fn release(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<()> {
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut script = script.prepare_invoke();
        script.key(&self.keys).arg(&self.id);
        script.invoke_async::<i64>(conn).await.map(drop)
    }
}

/// The id of an exclusive writer other than `writer` that holds the lease of one of
/// `mappings` now, if any: what the change script would be refused for, so that a shared
/// sink stands by for it instead (`run/appliers.rs`).
pub async fn exclusive_holder(
    pool: &Pool,
    mappings: &[Mapping],
    writer: &WriterId,
) -> Result<Option<String>, ApplyError> {
    let mut conn = pool.get().await.map_err(ApplyError::Pool)?;
    let keys: Vec<String> = mappings
        .iter()
        .map(|m| layout::writer_key(&m.name))
        .collect();
    let holders: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .map_err(|source| ApplyError::Redis {
        operation: "reading the exclusive lease",
        changes: 0,
        source,
    })?;
    Ok(holders
        .into_iter()
        .flatten()
        .find(|holder| holder != writer.as_str()))
}
