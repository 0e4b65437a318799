//! What either writer records besides changes: the stored types of a mapping
//! (`sink:types:{mapping}`) and the time the sink was last caught up
//! (`caught_up_at_ms` in `sink:freshness:{mapping}`). Plain writes from Rust: both concern
//! the whole mapping, not a row, so they need no bookkeeping and no ordering guard.

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

/// The mappings' per-mapping records, written on the writer's pool.
pub(crate) struct Records {
    pool: Pool,
    mappings: Vec<Mapping>,
    caught_up: redis::Script,
}

impl Records {
    pub(crate) fn new(pool: Pool, mappings: &[Mapping]) -> Records {
        Records {
            pool,
            mappings: mappings.to_vec(),
            caught_up: redis::Script::new(CAUGHT_UP_SCRIPT),
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
