//! A shared sink announcing itself: its writer id in `sink:shared:{mapping}` of each of its
//! mappings ([`mapping::layout::shared_key`]), renewed every third of the lease time for as
//! long as it writes through the change script.
//!
//! `--writer auto` takes the exclusive lease only where no other sink announces itself
//! (`owned/lease.rs`): once an exclusive writer holds a mapping, the change script refuses
//! to write it, so a shared sink already running would be shut out. The announcements are
//! what lets a `sink run` with the default writer start beside shared sinks and write
//! through the script with them instead, and what makes an `auto` sink holding the lease
//! give it up to a shared sink that announces itself later and stands by for it.
//!
//! Who announces: `--writer shared`, and `auto` sinks on the script for good (fallen back,
//! or mappings with `ttl_seconds`). An `auto` sink on the script only because others
//! announced themselves does not: it watches the announcements ([`announced_by_another`])
//! and takes the lease once none has held for six lease times (`run/appliers.rs`), so
//! announcing would keep every such sink on the script for as long as any other did. Shut
//! out by another `auto` sink's lease instead, it stands by for the lease.
//!
//! An announcement is one member per sink, scored with the Redis server time until which it
//! holds, so that one sink stopping never hides another; the key itself expires one lease
//! time after the last renewal. A stopped sink's announcement is left to expire rather than
//! removed: removing it at the wrong moment cannot shut anyone out, but it could not be done
//! from `Drop` either.

use std::time::Duration;

use deadpool_redis::Pool;
use mapping::{layout, Mapping};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

use crate::apply::{ApplyError, WriterId};

/// Adds (or renews) ARGV[1] in each of KEYS until ARGV[2] ms from the server's clock, drops
/// the announcements that expired, and keeps each key for ARGV[2] ms.
const ANNOUNCE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 1)
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', key, ARGV[2])
end
return #KEYS
";

/// The first of ARGV[1]'s rivals: a member of one of KEYS other than ARGV[1] whose
/// announcement holds at the server's clock; false if there is none.
const RIVAL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for _, key in ipairs(KEYS) do
  for _, sharer in ipairs(redis.call('ZRANGEBYSCORE', key, now, '+inf')) do
    if sharer ~= ARGV[1] then return sharer end
  end
end
return false
";

/// A shared sink's announcement on its mappings, renewed until dropped.
pub struct Announcement {
    _renewing: DropGuard,
}

impl Announcement {
    /// Announces `writer` as a shared writer of `mappings` for `ttl`, then keeps renewing it
    /// every third of `ttl` in a task (call within a Tokio runtime) until the announcement
    /// is dropped. The first announcement is made before this returns, so that nothing this
    /// sink writes afterwards can precede it; when Redis refuses it, that is logged and the
    /// renewals try again (the sink writes all the same: without the announcement, a
    /// `--writer auto` sink starting meanwhile could only make the script refuse this one).
    pub async fn start(
        pool: Pool,
        mappings: &[Mapping],
        writer: &WriterId,
        ttl: Duration,
    ) -> Announcement {
        let keys: Vec<String> = mappings
            .iter()
            .map(|m| layout::shared_key(&m.name))
            .collect();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        if let Err(e) = announce(&pool, &keys, writer.as_str(), ttl_ms).await {
            warn!(error = %e, "Cannot announce this shared sink in redis; trying again with the renewals.");
        }
        let stop = CancellationToken::new();
        let renewing = stop.clone();
        let id = writer.as_str().to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = renewing.cancelled() => return,
                    () = tokio::time::sleep(ttl / 3) => {}
                }
                if let Err(e) = announce(&pool, &keys, &id, ttl_ms).await {
                    warn!(error = %e, "Cannot renew this shared sink's announcement in redis; a --writer auto sink starting now could take the exclusive lease.");
                }
            }
        });
        Announcement {
            _renewing: stop.drop_guard(),
        }
    }
}

/// The id of a sink other than `writer` whose announcement on one of `mappings` holds now
/// (Redis's clock), if any: what keeps `--writer auto` on the change script.
pub async fn announced_by_another(
    pool: &Pool,
    mappings: &[Mapping],
    writer: &WriterId,
) -> Result<Option<String>, ApplyError> {
    let mut conn = pool.get().await.map_err(ApplyError::Pool)?;
    let script = redis::Script::new(RIVAL_SCRIPT);
    let mut invocation = script.prepare_invoke();
    for m in mappings {
        invocation.key(layout::shared_key(&m.name));
    }
    invocation.arg(writer.as_str());
    invocation
        .invoke_async::<Option<String>>(&mut conn)
        .await
        .map_err(|source| ApplyError::Redis {
            operation: "reading shared sinks' announcements",
            changes: 0,
            source,
        })
}

async fn announce(pool: &Pool, keys: &[String], id: &str, ttl_ms: u64) -> Result<(), ApplyError> {
    let mut conn = pool.get().await.map_err(ApplyError::Pool)?;
    let script = redis::Script::new(ANNOUNCE_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation.key(keys).arg(id).arg(ttl_ms);
    invocation
        .invoke_async::<i64>(&mut conn)
        .await
        .map(drop)
        .map_err(|source| ApplyError::Redis {
            operation: "shared sink announcement",
            changes: 0,
            source,
        })
}
