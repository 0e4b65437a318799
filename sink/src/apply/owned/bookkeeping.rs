//! The bookkeeping a batch changed, written once per batch: `sink:rows` and `sink:index`
//! entries (one `HSET`/`HDEL` per hash), then freshness and offsets (one script call, the
//! same as the end of a chunk script).

use super::{BatchWrites, HashMap, HashSet, OwnedState, Undo};

/// Records freshness and offsets for a batch, as the end of a chunk script does.
/// ARGV: M, then M × (freshness key, applied count, highest source_ts_ms or ''), then
/// P, then P × (offsets field, offset).
const BOOKKEEPING_SCRIPT: &str = r"
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
  local cur = ts ~= '' and redis.call('HGET', fresh, 'source_ts_ms')
  if ts ~= '' and (not cur or gt(ts, cur)) then
    redis.call('HSET', fresh, 'source_ts_ms', ts, 'applied_at_ms', now)
  else
    redis.call('HSET', fresh, 'applied_at_ms', now)
  end
  redis.call('HINCRBY', fresh, 'applied_count', n)
end
local np = tonumber(ARGV[i])
i = i + 1
for _ = 1, np do
  local field, offset = ARGV[i], ARGV[i + 1]
  i = i + 2
  local cur = redis.call('HGET', 'sink:offsets', field)
  if not cur or gt(offset, cur) then redis.call('HSET', 'sink:offsets', field, offset) end
end
return 1
";

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
            .arg(BOOKKEEPING_SCRIPT)
            .arg(0)
            .arg(fresh.len());
        for m in fresh {
            cmd.arg(&state.models[m].fresh_key)
                .arg(w.applied[m])
                .arg(w.max_ts[m].map_or_else(String::new, |t| t.to_string()));
        }
        cmd.arg(w.offsets.len());
        for ((topic, partition), offset) in &w.offsets {
            cmd.arg(format!("{topic}/{partition}")).arg(*offset);
        }
    }
}
