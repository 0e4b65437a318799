-- Applies ONE change to the Redis read model, atomically and idempotently
-- (ARCHITECTURE.md, "Redis layout" and "Change semantics"). Loaded once, run with
-- `EVALSHA <sha> 0 ARGV...`; the Rust side (apply/args.rs) builds the ARGV.
--
-- No keys are declared: the keys touched depend on stored values, so this script only runs
-- on a standalone Redis (not Redis Cluster).
--
-- Every read (and every command that could fail with WRONGTYPE) happens before the first
-- write, so a failing change leaves nothing half-applied.
--
-- ARGV layout (1-based; '' means "none"):
--   [1] op: 'u' upsert, 'd' delete (position-guarded, or a tombstone when [4] is ''),
--       't' truncate
--   [2] mapping name
--   [3] row key ('' for truncate)
--   [4] source position, canonical non-negative decimal, or '' (unguarded)
--   [5] source_ts_ms, canonical non-negative decimal, or ''
--   [6] offsets field '{topic}/{partition}'   [7] Kafka offset (canonical decimal)
--   [8] ttl_seconds or ''
--   static per-mapping part, from [9]:
--     nf, then nf stored field names: the template fields (row key, index and relation
--         templates), read with one HMGET
--     nk, then nk field numbers (1-based into the nf names): the row key template's fields;
--         the row's primary key text is their values joined by ':'
--     ni, then per index: name, template
--     nr, then per relation: template
--     template = n, L0, (field number, L) x n: literal texts around n placeholders
--   upsert part (op 'u' only), right after the static part:
--     nf refs, one per template field: '0' = not written (keep stored value), '-1' = removed
--         (NULL), j > 0 = the j-th pair of the set list below
--     nr scores: a number, or '' = keep the member's current score (order_by not sent)
--     ns, then ns pairs field, value (HSET)
--     nd, then nd field names (HDEL)
--
-- Bookkeeping written here (ARCHITECTURE.md): `sink:rows:{mapping}` row key -> position;
-- `sink:index:{mapping}:{index}` rendered index KEY (e.g. `customer:email:jane@example.com`)
-- -> position of the change that last claimed or released it; `sink:freshness:{mapping}`;
-- `sink:offsets`. A change without a position (tombstone, truncate) records the row's last
-- stored position instead, never lowering a recorded one. Truncate takes an optional
-- position in [4] (only rows stored before it are deleted); without one, every row listed in
-- `sink:rows:{mapping}` is deleted, in one script call (long for big mappings).
--
-- Returns 1 when the change was applied, 0 when it was a no-op (ordering guard, replay,
-- tombstone or delete of an absent row, truncate of an empty mapping). Freshness is only
-- recorded for applied changes, so replaying applied changes leaves every key unchanged;
-- the partition offset is recorded (as a maximum) either way.

-- Effects replication (the default since Redis 5; needed before 5 because TIME is not
-- deterministic). A no-op on Redis 7.
if redis.replicate_commands then redis.replicate_commands() end

local call = redis.call
local op, mapping, row, pos, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rows_key = 'sink:rows:' .. mapping
local index_prefix = 'sink:index:' .. mapping .. ':'

-- a > b for canonical non-negative decimal strings (exact beyond 2^53).
local function gt(a, b)
  local la, lb = #a, #b
  if la ~= lb then return la > lb end
  if la < 16 then return tonumber(a) > tonumber(b) end
  for j = 1, la do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x > y end
  end
  return false
end

-- The static part.
local i = 9
local function take()
  local v = ARGV[i]
  i = i + 1
  return v
end
local function template()
  local n = tonumber(take())
  local t = { n = n, take() }
  for j = 1, n do
    t[2 * j] = tonumber(take())
    t[2 * j + 1] = take()
  end
  return t
end
local nf = tonumber(take())
local fields = {}
for f = 1, nf do fields[f] = take() end
local nk = tonumber(take())
local keyf = {}
for k = 1, nk do keyf[k] = tonumber(take()) end
local indexes = {}
for x = 1, tonumber(take()) do
  local name = take()
  indexes[x] = { key = index_prefix .. name, t = template() }
end
local relations = {}
for r = 1, tonumber(take()) do relations[r] = template() end

-- Renders template t from vals (false/nil = field absent: no key).
local function render(t, vals)
  local parts = { t[1] }
  for j = 1, t.n do
    local v = vals[t[2 * j]]
    if not v then return nil end
    parts[2 * j] = v
    parts[2 * j + 1] = t[2 * j + 1]
  end
  return table.concat(parts)
end

local function primary_key(vals)
  local parts = {}
  for k = 1, nk do
    local v = vals[keyf[k]]
    if not v then return nil end
    parts[k] = v
  end
  return table.concat(parts, ':')
end

local function stored_values(key)
  if nf == 0 then return {} end
  return call('HMGET', key, unpack(fields))
end

-- The position to record for a change at `p` (possibly '') over `recorded` (possibly
-- false), when the row's last stored position is `fallback`: the incoming position when
-- known, otherwise never lower than what is recorded.
local function record_pos(p, recorded, fallback)
  if p ~= '' then return p end
  local e = fallback or '0'
  if recorded and gt(recorded, e) then return recorded end
  return e
end

local writes = {}
local function write(...) writes[#writes + 1] = { ... } end

-- Plans the deletion of `key` (stored position `stored`, or false) by a change at `p`:
-- the hash, its index entries (only those still naming this row and not recorded by a later
-- change), its relation memberships and its `sink:rows` entry. Reads only.
local function plan_delete(key, stored, p)
  local old = stored_values(key)
  local pk = primary_key(old)
  if pk then
    for _, x in ipairs(indexes) do
      local k = render(x.t, old)
      if k and call('GET', k) == pk then
        local rec = call('HGET', x.key, k)
        if p == '' or not rec or not gt(rec, p) then
          write('DEL', k)
          write('HSET', x.key, k, record_pos(p, rec, stored))
        end
      end
    end
    for _, t in ipairs(relations) do
      local parent = render(t, old)
      -- ZSCORE fails on a wrong type now, rather than ZREM after other writes.
      if parent and call('ZSCORE', parent, pk) then write('ZREM', parent, pk) end
    end
  end
  write('DEL', key)
  write('HDEL', rows_key, key)
end

local applied = false

if op == 'u' then
  local stored = call('HGET', rows_key, row)
  if pos == '' or not stored or gt(pos, stored) then
    applied = true
    local old = stored_values(row)
    local refs_at = i
    local scores_at = refs_at + nf
    local ns_at = scores_at + #relations
    local ns = tonumber(ARGV[ns_at])
    local sets_at = ns_at + 1
    local nd_at = sets_at + 2 * ns
    local nd = tonumber(ARGV[nd_at])
    local new = {}
    for f = 1, nf do
      local ref = tonumber(ARGV[refs_at + f - 1])
      if ref == 0 then
        new[f] = old[f]
      elseif ref < 0 then
        new[f] = false
      else
        new[f] = ARGV[sets_at + 2 * ref - 1]
      end
    end
    local pk = primary_key(new)
    if not pk then
      return redis.error_reply('ERR row ' .. row .. ': the row key fields have no value')
    end
    local recorded_pos = record_pos(pos, stored, stored)
    for _, x in ipairs(indexes) do
      local old_key, new_key = render(x.t, old), render(x.t, new)
      if old_key and old_key ~= new_key and call('GET', old_key) == pk then
        local rec = call('HGET', x.key, old_key)
        if pos == '' or not rec or not gt(rec, pos) then
          write('DEL', old_key)
          write('HSET', x.key, old_key, record_pos(pos, rec, stored))
        end
      end
      if new_key and call('GET', new_key) ~= pk then
        local rec = call('HGET', x.key, new_key)
        if pos == '' or not rec or not gt(rec, pos) then
          write('SET', new_key, pk)
          write('HSET', x.key, new_key, record_pos(pos, rec, stored))
        end
      end
    end
    for r, t in ipairs(relations) do
      local old_parent, new_parent = render(t, old), render(t, new)
      local score = ARGV[scores_at + r - 1]
      local old_score = false
      if old_parent and old_parent ~= new_parent then
        old_score = call('ZSCORE', old_parent, pk)
        if old_score then write('ZREM', old_parent, pk) end
      end
      if new_parent then
        local cur = call('ZSCORE', new_parent, pk)
        if score == '' then score = cur or old_score or '0' end
        if not cur or tonumber(cur) ~= tonumber(score) then
          write('ZADD', new_parent, score, pk)
        end
      end
    end
    -- Writes, in order: hash, expiry, row position, indexes and relations (queued above).
    if ns > 0 then call('HSET', row, unpack(ARGV, sets_at, nd_at - 1)) end
    if nd > 0 then call('HDEL', row, unpack(ARGV, nd_at + 1, nd_at + nd)) end
    if ARGV[8] ~= '' then call('EXPIRE', row, ARGV[8]) end
    call('HSET', rows_key, row, recorded_pos)
  end
elseif op == 'd' then
  local stored = call('HGET', rows_key, row)
  if pos == '' or not stored or gt(pos, stored) then
    if stored or call('EXISTS', row) == 1 then
      applied = true
      plan_delete(row, stored, pos)
    end
  end
elseif op == 't' then
  local all = call('HGETALL', rows_key)
  for j = 1, #all, 2 do
    local key, stored = all[j], all[j + 1]
    if pos == '' or gt(pos, stored) then
      applied = true
      plan_delete(key, stored, pos)
    end
  end
else
  return redis.error_reply('ERR unknown op ' .. tostring(op))
end

for _, w in ipairs(writes) do call(unpack(w)) end

if applied then
  local fk = 'sink:freshness:' .. mapping
  local now = call('TIME')
  local applied_at = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
  if ts ~= '' then
    local cur = call('HGET', fk, 'source_ts_ms')
    if not cur or gt(ts, cur) then
      call('HSET', fk, 'source_ts_ms', ts, 'applied_at_ms', applied_at)
    else
      call('HSET', fk, 'applied_at_ms', applied_at)
    end
  else
    call('HSET', fk, 'applied_at_ms', applied_at)
  end
  call('HINCRBY', fk, 'applied_count', 1)
end

local cur = call('HGET', 'sink:offsets', ARGV[6])
if not cur or gt(ARGV[7], cur) then call('HSET', 'sink:offsets', ARGV[6], ARGV[7]) end

if applied then return 1 end
return 0
