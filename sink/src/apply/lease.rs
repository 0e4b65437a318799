//! The exclusive writer's lease on its Redis database: the key `sink:writer`, holding the
//! writer's id, with an expiry the writer keeps renewing.
//!
//! An exclusive sink ([`super::Applier::exclusive`]) decides changes against bookkeeping it
//! holds in memory, so it must be the only one writing the mapped keys: a second exclusive
//! sink waits for the lease (a standby that takes over within one lease time when the holder
//! dies), and the change script refuses to run while an exclusive writer holds the database
//! (`EXCLUSIVE` error, see `change.lua`), so a shared sink started by mistake stops instead of
//! writing behind the holder's back.
//!
//! The key also detects what replaces the database under the writer: a rebuild's `SWAPDB`
//! touches every watched key, and the rebuilt database has no lease key. Each batch watches
//! it and checks that it still names this writer before its transaction (see
//! `owned_writer.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;

/// The lease key.
pub(crate) const LEASE_KEY: &str = "sink:writer";

/// A key nobody writes: watched while the bookkeeping is loaded, so that a `SWAPDB` during
/// the load is noticed even though the lease is renewed meanwhile.
pub(crate) const SWAP_SENTINEL_KEY: &str = "sink:writer:swap";

/// How long the lease lasts without renewal unless configured otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Keeps the lease when this writer holds it, takes it when nobody does.
/// KEYS[1] lease key; ARGV[1] writer id, ARGV[2] time to live in ms.
/// Returns 1 (held and renewed), 2 (was free, now taken) or the id of the other holder.
const TAKE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return holder
";

/// Gives the lease up if this writer holds it. KEYS[1] lease key; ARGV[1] writer id.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// What taking or renewing the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holding {
    /// This writer held it; renewed.
    Kept,
    /// Nobody held it (first start, expired, or the database was swapped); taken now.
    Taken,
    /// Another writer holds it.
    HeldBy(String),
}

/// This process's identity as a writer and its lease time.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    id: String,
    ttl: Duration,
    script: redis::Script,
}

impl Lease {
    /// A lease for a new writer: host, process id and start time name it.
    pub(crate) fn new(ttl: Duration) -> Lease {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        Lease {
            id: format!("{host}:{}:{started:x}", std::process::id()),
            ttl: ttl.max(Duration::from_millis(300)),
            script: redis::Script::new(TAKE_SCRIPT),
        }
    }

    /// The value of the lease key while this writer holds it.
    pub(crate) fn id(&self) -> &str {
        &self.id
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

    /// Gives the lease up (at shutdown, so that a standby or a restarted sink need not wait
    /// for it to lapse); whether this writer still held it.
    pub(crate) async fn release(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<bool> {
        redis::Script::new(RELEASE_SCRIPT)
            .key(LEASE_KEY)
            .arg(&self.id)
            .invoke_async(conn)
            .await
    }

    /// Renews the lease if this writer holds it, takes it if it is free.
    pub(crate) async fn take(&self, conn: &mut impl ConnectionLike) -> redis::RedisResult<Holding> {
        let reply: redis::Value = self
            .script
            .key(LEASE_KEY)
            .arg(&self.id)
            .arg(self.ttl_ms())
            .invoke_async(conn)
            .await?;
        Ok(match reply {
            redis::Value::Int(1) => Holding::Kept,
            redis::Value::Int(_) => Holding::Taken,
            other => Holding::HeldBy(redis::from_redis_value::<String>(other)?),
        })
    }
}
