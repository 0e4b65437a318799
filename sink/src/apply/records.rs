//! What either writer records besides changes: the stored types of a mapping
//! (`sink:types:{mapping}`), the time the sink was last caught up
//! (`caught_up_at_ms` in `sink:freshness:{mapping}`) and a source's watermark
//! (`sink:watermark:{source}`). Plain writes from Rust: they concern a whole mapping or
//! source, not a row, so they need no bookkeeping; the watermark guards itself (it only
//! moves forward) and is written only after the data it covers (`pipeline/watermark.rs`).

use std::sync::Arc;

use deadpool_redis::Pool;
use mapping::{layout, ColumnType, Mapping};

use super::ApplyError;

/// Sets field ARGV[1] (`caught_up_at_ms`) of every hash in KEYS (`sink:freshness:{mapping}`)
/// to server time.
const CAUGHT_UP_SCRIPT: &str = r"
local now = redis.call('TIME')
local ms = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
for _, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[1], ms)
end
return ms
";

/// Moves the watermark hash KEYS[1] forward to (lsn ARGV[2], ts_ms ARGV[4]), never back: a
/// sink restarted on older records, or a second sink, cannot move it behind. ARGV holds the
/// field names (odd) and values (even); ARGV[7] names the field set to server time.
/// Returns 1 when it moved.
const WATERMARK_SCRIPT: &str = r"
local lsn = tonumber(ARGV[2])
local ts = tonumber(ARGV[4])
local stored = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[3])
local stored_lsn = tonumber(stored[1])
local stored_ts = tonumber(stored[2])
if stored_lsn and (lsn < stored_lsn or (lsn == stored_lsn and ts <= (stored_ts or 0))) then
  return 0
end
local now = redis.call('TIME')
local ms = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ms)
return 1
";

/// A source watermark: every change up to `lsn`, and every change committed before
/// `ts_ms`, is in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// Source position (PostgreSQL LSN).
    pub lsn: u64,
    /// Source commit time (ms since the epoch).
    pub ts_ms: i64,
    /// Commit time of the heartbeat that confirmed `lsn`.
    pub heartbeat_ts_ms: i64,
}

/// The mappings' per-mapping records, written on the writer's pool.
pub(crate) struct Records {
    pool: Pool,
    mappings: Vec<Mapping>,
    caught_up: redis::Script,
    watermark: redis::Script,
}

impl Records {
    pub(crate) fn new(pool: Pool, mappings: &[Mapping]) -> Records {
        Records {
            pool,
            mappings: mappings.to_vec(),
            caught_up: redis::Script::new(CAUGHT_UP_SCRIPT),
            watermark: redis::Script::new(WATERMARK_SCRIPT),
        }
    }

    /// `HSET sink:types:{mapping}` from the columns of the mapping's value schema.
    pub(crate) async fn column_types(
        &self,
        mapping: usize,
        types: &[(String, ColumnType)],
    ) -> Result<(), ApplyError> {
        let m = self
            .mappings
            .get(mapping)
            .ok_or_else(|| self.bad_mapping(mapping))?;
        let stored = m.stored_types(types);
        if stored.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(layout::types_key(&m.name));
        for (field, ty) in &stored {
            cmd.arg(field).arg(ty.as_str());
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        cmd.query_async::<()>(&mut conn)
            .await
            .map_err(|source| ApplyError::Redis {
                operation: "HSET sink:types",
                changes: 0,
                source,
            })
    }

    /// `caught_up_at_ms` of each of `mappings` to Redis server time.
    pub(crate) async fn caught_up(&self, mappings: &[usize]) -> Result<(), ApplyError> {
        if mappings.is_empty() {
            return Ok(());
        }
        let mut invocation = self.caught_up.prepare_invoke();
        invocation.arg(layout::freshness::CAUGHT_UP_AT_MS);
        for &m in mappings {
            let mapping = self.mappings.get(m).ok_or_else(|| self.bad_mapping(m))?;
            invocation.key(layout::freshness_key(&mapping.name));
        }
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        invocation
            .invoke_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|source| ApplyError::Redis {
                operation: "caught-up script",
                changes: 0,
                source,
            })
    }

    /// Moves `sink:watermark:{source}` forward to `watermark` (never back); whether it moved.
    pub(crate) async fn watermark(
        &self,
        source: &str,
        watermark: &Watermark,
    ) -> Result<bool, ApplyError> {
        use mapping::layout::watermark as field;
        let mut invocation = self.watermark.prepare_invoke();
        invocation
            .key(layout::watermark_key(source))
            .arg(field::LSN)
            .arg(watermark.lsn)
            .arg(field::TS_MS)
            .arg(watermark.ts_ms)
            .arg(field::HEARTBEAT_TS_MS)
            .arg(watermark.heartbeat_ts_ms)
            .arg(field::UPDATED_AT_MS);
        let mut conn = self.pool.get().await.map_err(ApplyError::Pool)?;
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|moved| moved == 1)
            .map_err(|source| ApplyError::Redis {
                operation: "watermark script",
                changes: 0,
                source,
            })
    }

    fn bad_mapping(&self, mapping: usize) -> ApplyError {
        ApplyError::Invalid {
            topic: Arc::from(""),
            partition: -1,
            offset: -1,
            reason: format!(
                "mapping number {mapping} out of range ({} mappings)",
                self.mappings.len()
            ),
        }
    }
}
