//! The bookkeeping a batch changed, written once per batch: `sink:rows` and `sink:index`
//! entries (one `HSET`/`HDEL` per hash), then freshness and offsets (one script call, the
//! same as the end of a chunk script).

use std::sync::LazyLock;

use mapping::layout;

use super::super::script;
use super::{BatchWrites, HashMap, HashSet, OwnedState, Undo};

/// Records freshness and offsets for a batch, as the end of a chunk script does; run after
/// the layout's names ([`script::layout_constants`]).
/// ARGV: M, then M × (freshness key, applied count, highest source_ts_ms or ''), then
/// P, then P × (offsets field, offset).
const BOOKKEEPING_BODY: &str = r"
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local i, now = 2, false
for _ = 1, tonumber(ARGV[1]) do
  local fresh, n, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if not now then
    local t = redis.call('TIME')
    now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  local cur = ts ~= '' and redis.call('HGET', fresh, SOURCE_TS_MS)
  if ts ~= '' and (not cur or gt(ts, cur)) then
    redis.call('HSET', fresh, SOURCE_TS_MS, ts, APPLIED_AT_MS, now)
  else
    redis.call('HSET', fresh, APPLIED_AT_MS, now)
  end
  redis.call('HINCRBY', fresh, APPLIED_COUNT, n)
end
local np = tonumber(ARGV[i])
i = i + 1
for _ = 1, np do
  local field, offset = ARGV[i], ARGV[i + 1]
  i = i + 2
  local cur = redis.call('HGET', OFFSETS, field)
  if not cur or gt(offset, cur) then redis.call('HSET', OFFSETS, field, offset) end
end
return 1
";

/// [`BOOKKEEPING_BODY`] after the layout's names.
static BOOKKEEPING_SCRIPT: LazyLock<String> =
    LazyLock::new(|| format!("{}{BOOKKEEPING_BODY}", script::layout_constants()));

/// `sink:rows` and `sink:index` entries changed by the batch (one `HSET`/`HDEL` per
/// hash), then freshness and offsets (one script call).
pub(super) fn write(state: &OwnedState, w: &BatchWrites, pipe: &mut redis::Pipeline) {
    const SLICE: usize = 1000;
    let mut seen: HashSet<(usize, &str)> = HashSet::default();
    let mut sets: HashMap<&str, Vec<(&str, String)>> = HashMap::default();
    let mut dels: HashMap<&str, Vec<&str>> = HashMap::default();
    for u in &w.undo {
        match u {
            Undo::Row(m, key, _) => {
                if !seen.insert((*m, key)) {
                    continue;
                }
                let hash = state.models[*m].rows_key.as_str();
                match state.rows[*m].get(key) {
                    Some(s) => sets
                        .entry(hash)
                        .or_default()
                        .push((key, s.position.to_string())),
                    None => dels.entry(hash).or_default().push(key),
                }
            }
            Undo::Index(key, _) => {
                if !seen.insert((usize::MAX, key)) {
                    continue;
                }
                if let Some(s) = state.indexes.get(key) {
                    let hash = state.index_hashes[s.hash].as_str();
                    sets.entry(hash)
                        .or_default()
                        .push((key, s.position.to_string()));
                }
            }
        }
    }
    for (hash, pairs) in &sets {
        for slice in pairs.chunks(SLICE) {
            let cmd = pipe.cmd("HSET").arg(*hash);
            for (f, v) in slice {
                cmd.arg(*f).arg(v);
            }
        }
    }
    for (hash, fields) in &dels {
        for slice in fields.chunks(SLICE) {
            pipe.cmd("HDEL").arg(*hash).arg(slice);
        }
    }
    let fresh: Vec<usize> = (0..state.models.len())
        .filter(|&m| w.applied[m] > 0)
        .collect();
    if !fresh.is_empty() || !w.offsets.is_empty() {
        let cmd = pipe
            .cmd("EVAL")
            .arg(BOOKKEEPING_SCRIPT.as_str())
            .arg(0)
            .arg(fresh.len());
        for m in fresh {
            cmd.arg(&state.models[m].fresh_key)
                .arg(w.applied[m])
                .arg(w.max_ts[m].map_or_else(String::new, |t| t.to_string()));
        }
        cmd.arg(w.offsets.len());
        for ((topic, partition), offset) in &w.offsets {
            cmd.arg(layout::offsets_field(topic, *partition))
                .arg(*offset);
        }
    }
}
