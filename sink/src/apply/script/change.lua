-- Applies a CHUNK of consecutive changes to the Redis read model, each atomically and
-- idempotently (ARCHITECTURE.md, "Redis layout" and "Change semantics"). Loaded once per
-- configuration, run with `EVALSHA <sha> 0 ARGV...`. The Rust side builds the ARGV
-- (apply/script/args.rs) and prepends, as Lua constants (apply/script/generate.rs), the
-- names of the Redis layout (mapping::layout) and the static per-mapping part:
--
--   OFFSETS = 'sink:offsets'; SOURCE_TS_MS, APPLIED_AT_MS, APPLIED_COUNT: freshness fields
--   MAPPINGS[m] = { rows = 'sink:rows:{name}', fresh = 'sink:freshness:{name}',
--     writer = 'sink:writer:{name}' (an exclusive sink's lease),
--     ttl = '60' or false, fields = { template field names, read with one HMGET },
--     keyf = { field numbers of the row key template: the primary key text is their
--     values joined by ':' }, indexes = { { key = 'sink:index:{name}:{index}', t = tpl } },
--     relations = { tpl },
--     searches = { { zset = 'sink:search:{name}:{search}', members = '...:members' } } }
--   tpl = { n = placeholders, L0, field number, L1, ..., field number, Ln }
--
-- No keys are declared: the keys touched depend on stored values, so this script only runs
-- on a standalone Redis (not Redis Cluster).
--
-- ARGV layout (1-based; '' means "none"):
--   [1] K, then K offsets fields '{topic}/{partition}' (the chunk's partitions)
--   [K+2] marker guard: '1' = refuse the chunk unless every one of its partitions is marked
--        in `sink:offsets:run` under the server's current run_id by the assignment the chunk
--        was read under (below), '' = off
--   with the guard on, K fences: the marker each partition must hold, in the order above
--   then the changes, one after another, each:
--     +0 length of this change's arguments (itself included)
--     +1 mapping number (1-based into MAPPINGS)
--     +2 op: 'u' upsert, 'd' delete (position-guarded, or a tombstone when +4 is ''),
--        't' truncate
--     +3 row key ('' for truncate)
--     +4 source position, canonical non-negative decimal, or '' (unguarded)
--     +5 source_ts_ms, canonical non-negative decimal, or ''
--     +6 offsets field number (1..K)   +7 Kafka offset (canonical decimal)
--     upsert part (op 'u' only), from +8:
--       nf refs, one per template field: '0' = not written (keep stored value), '-1' =
--           removed (NULL), j > 0 = the j-th pair of the set list below
--       nr scores: a number, or '' = keep the member's current score (order_by not sent)
--       one per search: 'k' keep the row's member, 'r' remove it (field NULL), or 's' followed
--           by the new member (mapping::search: folded value, sortable key, row key)
--       ns, then ns pairs field, value (HSET)
--       nd, then nd field names (HDEL)
--
-- Each change is applied completely before the next one. Within a change every read (and
-- every command that could fail with WRONGTYPE) happens before its first write, so a failing
-- change leaves nothing of itself behind; its error is caught, becomes its entry in the
-- reply, and the chunk goes on with the next change: exactly what a pipeline of one script
-- per change did.
--
-- Bookkeeping (ARCHITECTURE.md): `sink:rows:{mapping}` row key -> position;
-- `sink:index:{mapping}:{index}` rendered index KEY (e.g. `customer:email:jane@example.com`)
-- -> position of the change that last claimed or released it. A change without a position
-- (tombstone, truncate) records the row's last stored position instead, never lowering a
-- recorded one. Truncate takes an optional position (only rows stored before it are
-- deleted); without one, every row listed in `sink:rows:{mapping}` is deleted.
-- Once per chunk, after its changes (in the same atomic call): `sink:freshness:{mapping}`
-- of every mapping with applied changes (one server TIME; source_ts_ms as a maximum,
-- applied_count incremented by the number applied) and `sink:offsets` (per partition, the
-- highest offset of the chunk's changes that did not fail, recorded as a maximum).
--
-- Returns one entry per change: 1 applied, 0 no-op (ordering guard, replay, tombstone or
-- delete of an absent row, truncate of an empty mapping), or an error reply. Freshness only
-- counts applied changes, so replaying applied changes leaves every key unchanged.

-- Effects replication (the default since Redis 5; needed before 5 because TIME is not
-- deterministic). A no-op on Redis 7.
if redis.replicate_commands then redis.replicate_commands() end

local call = redis.call
local ARGV, tonumber, unpack, ipairs = ARGV, tonumber, unpack, ipairs

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

local function fail(message) error({ err = message }) end

-- Renders template t from vals (false/nil = field absent: no key).
local function render(t, vals)
  if t.n == 1 then
    local v = vals[t[2]]
    if not v then return nil end
    return t[1] .. v .. t[3]
  end
  local parts = { t[1] }
  for j = 1, t.n do
    local v = vals[t[2 * j]]
    if not v then return nil end
    parts[2 * j] = v
    parts[2 * j + 1] = t[2 * j + 1]
  end
  return table.concat(parts)
end

local function primary_key(M, vals)
  local keyf = M.keyf
  if #keyf == 1 then return vals[keyf[1]] or nil end
  local parts = {}
  for k = 1, #keyf do
    local v = vals[keyf[k]]
    if not v then return nil end
    parts[k] = v
  end
  return table.concat(parts, ':')
end

local function stored_values(M, key)
  if #M.fields == 0 then return {} end
  return call('HMGET', key, unpack(M.fields))
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

-- Plans the deletion of `key` (stored position `stored`, or false) by a change at `p`:
-- the hash, its index entries (only those still naming this row and not recorded by a later
-- change), its relation memberships, its search members and its `sink:rows` entry. Reads only.
local function plan_delete(M, writes, key, stored, p, deltas)
  local old = stored_values(M, key)
  agg_collect(M, deltas, old, -1, render)
  local pk = primary_key(M, old)
  if pk then
    for _, x in ipairs(M.indexes) do
      local k = render(x.t, old)
      if k and call('GET', k) == pk then
        local rec = call('HGET', x.key, k)
        if p == '' or not rec or not gt(rec, p) then
          writes[#writes + 1] = { 'DEL', k }
          writes[#writes + 1] = { 'HSET', x.key, k, record_pos(p, rec, stored) }
        end
      end
    end
    for _, t in ipairs(M.relations) do
      local parent = render(t, old)
      -- ZSCORE fails on a wrong type now, rather than ZREM after other writes.
      if parent and call('ZSCORE', parent, pk) then writes[#writes + 1] = { 'ZREM', parent, pk } end
    end
  end
  for _, x in ipairs(M.searches) do
    local cur = call('HGET', x.members, key)
    if cur then
      writes[#writes + 1] = { 'ZREM', x.zset, cur }
      writes[#writes + 1] = { 'HDEL', x.members, key }
    end
  end
  writes[#writes + 1] = { 'DEL', key }
  writes[#writes + 1] = { 'HDEL', M.rows, key }
end

-- Applies the change whose arguments start at ARGV[at]; true when it changed anything.
local function apply_one(M, at)
  local op, row, pos = ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local writes = {}
  local deltas = {} -- aggregate figures to change (aggregate.lua)
  local applied = false
  if op == 'u' then
    local stored = call('HGET', M.rows, row)
    if pos ~= '' and stored and not gt(pos, stored) then return false end
    local fields, nf = M.fields, #M.fields
    local old = stored_values(M, row)
    local refs_at = at + 8
    local scores_at = refs_at + nf
    local searches_at = scores_at + #M.relations
    local ns_at = searches_at + #M.searches
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
    local pk = primary_key(M, new)
    if not pk then fail('ERR row ' .. row .. ': the row key fields have no value') end
    local recorded_pos = record_pos(pos, stored, stored)
    for _, x in ipairs(M.indexes) do
      local old_key, new_key = render(x.t, old), render(x.t, new)
      if old_key and old_key ~= new_key and call('GET', old_key) == pk then
        local rec = call('HGET', x.key, old_key)
        if pos == '' or not rec or not gt(rec, pos) then
          writes[#writes + 1] = { 'DEL', old_key }
          writes[#writes + 1] = { 'HSET', x.key, old_key, record_pos(pos, rec, stored) }
        end
      end
      if new_key and call('GET', new_key) ~= pk then
        local rec = call('HGET', x.key, new_key)
        if pos == '' or not rec or not gt(rec, pos) then
          writes[#writes + 1] = { 'SET', new_key, pk }
          writes[#writes + 1] = { 'HSET', x.key, new_key, record_pos(pos, rec, stored) }
        end
      end
    end
    for r, t in ipairs(M.relations) do
      local old_parent, new_parent = render(t, old), render(t, new)
      local score = ARGV[scores_at + r - 1]
      local old_score = false
      if old_parent and old_parent ~= new_parent then
        old_score = call('ZSCORE', old_parent, pk)
        if old_score then writes[#writes + 1] = { 'ZREM', old_parent, pk } end
      end
      if new_parent then
        local cur = call('ZSCORE', new_parent, pk)
        if score == '' then score = cur or old_score or '0' end
        if not cur or tonumber(cur) ~= tonumber(score) then
          writes[#writes + 1] = { 'ZADD', new_parent, score, pk }
        end
      end
    end
    for s, x in ipairs(M.searches) do
      local arg = ARGV[searches_at + s - 1]
      if arg ~= 'k' then
        local cur = call('HGET', x.members, row)
        local member = arg ~= 'r' and string.sub(arg, 2) or false
        if cur ~= member then
          if cur then writes[#writes + 1] = { 'ZREM', x.zset, cur } end
          if member then
            writes[#writes + 1] = { 'ZADD', x.zset, 0, member }
            writes[#writes + 1] = { 'HSET', x.members, row, member }
          else
            writes[#writes + 1] = { 'HDEL', x.members, row }
          end
        end
      end
    end
    agg_collect(M, deltas, old, -1, render)
    agg_collect(M, deltas, new, 1, render)
    agg_plan(deltas, writes)
    -- Writes, in order: hash, expiry, row position, indexes and relations (queued above).
    if ns > 0 then call('HSET', row, unpack(ARGV, sets_at, nd_at - 1)) end
    if nd > 0 then call('HDEL', row, unpack(ARGV, nd_at + 1, nd_at + nd)) end
    if M.ttl then call('EXPIRE', row, M.ttl) end
    call('HSET', M.rows, row, recorded_pos)
    applied = true
  elseif op == 'd' then
    local stored = call('HGET', M.rows, row)
    if pos == '' or not stored or gt(pos, stored) then
      if stored or call('EXISTS', row) == 1 then
        applied = true
        plan_delete(M, writes, row, stored, pos, deltas)
      end
    end
  elseif op == 't' then
    local all = call('HGETALL', M.rows)
    for j = 1, #all, 2 do
      local key, stored = all[j], all[j + 1]
      if pos == '' or gt(pos, stored) then
        applied = true
        plan_delete(M, writes, key, stored, pos, deltas)
      end
    end
  else
    fail('ERR unknown op ' .. tostring(op))
  end
  if op ~= 'u' then agg_plan(deltas, writes) end
  for _, w in ipairs(writes) do call(unpack(w)) end
  return applied
end

-- The chunk. Not while an exclusive sink holds one of the mappings (apply/owned/lease.rs): it
-- keeps their bookkeeping in its memory, and writes from here would go behind its back.
for _, M in ipairs(MAPPINGS) do
  local holder = call('GET', M.writer)
  if holder then return redis.error_reply('EXCLUSIVE ' .. M.writer .. ' ' .. holder) end
end
local nslots = tonumber(ARGV[1])
local slots = {}
for s = 1, nslots do slots[s] = ARGV[1 + s] end

-- Marker guard (ARCHITECTURE.md, "Self-healing"): a chunk of a partition whose marker in
-- `sink:offsets:run` is gone (Redis flushed or restarted empty) or names another server run
-- (restarted from an older file, a failover) would land on bookkeeping that no longer covers
-- what was applied before it, ahead of the replay that restores it: BOOKKEEPING. A chunk read
-- under an assignment of the partition that another one has superseded since (the marker,
-- `{run_id}:{token}`, names this run but not the chunk's fence, ARGV after the flag) would land
-- behind the new owner's replay: SUPERSEDED (apply/fence.rs). Refused, whole and before any
-- read of the changes.
local guarded = ARGV[nslots + 2] == '1'
if guarded then
  local info = redis.pcall('INFO', 'server')
  local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
  for s = 1, nslots do
    local marked = call('HGET', OFFSETS_RUN, slots[s])
    local fence = ARGV[nslots + 2 + s]
    if not marked or string.match(marked, '^[^:]*') ~= run then
      return redis.error_reply('BOOKKEEPING ' .. slots[s] .. ' ' .. (marked or 'unmarked'))
    end
    if marked ~= fence then
      return redis.error_reply('SUPERSEDED ' .. slots[s] .. ' ' .. marked .. ' ' .. fence)
    end
  end
end
local top = {} -- per offsets field number: highest offset of a change that did not fail
local count, max_ts = {}, {} -- per mapping number: applied changes, highest source_ts_ms
local results = {}
local at, nargs = nslots + 3 + (guarded and nslots or 0), #ARGV
while at <= nargs do
  local len = tonumber(ARGV[at])
  if not len or len < 8 then
    return redis.error_reply('ERR change ' .. (#results + 1) .. ' of the chunk: bad argument count')
  end
  local m = tonumber(ARGV[at + 1])
  local M = MAPPINGS[m]
  local ok, applied
  if M then
    ok, applied = pcall(apply_one, M, at)
  else
    ok, applied = false, { err = 'ERR unknown mapping number ' .. tostring(ARGV[at + 1]) }
  end
  if ok then
    if applied then
      results[#results + 1] = 1
      count[m] = (count[m] or 0) + 1
      local ts = ARGV[at + 5]
      if ts ~= '' and (not max_ts[m] or gt(ts, max_ts[m])) then max_ts[m] = ts end
    else
      results[#results + 1] = 0
    end
    local slot, offset = tonumber(ARGV[at + 6]), ARGV[at + 7]
    if not top[slot] or gt(offset, top[slot]) then top[slot] = offset end
  else
    local message = applied
    if type(message) == 'table' then message = message.err end
    message = tostring(message)
    -- A Lua runtime error has no error code: make it an ERR.
    if not string.find(message, '^%u[%u%d_]* ') then message = 'ERR ' .. message end
    results[#results + 1] = { err = message }
  end
  at = at + len
end

local now = false
for m, n in pairs(count) do
  local M = MAPPINGS[m]
  if not now then
    local t = call('TIME')
    now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  end
  local ts = max_ts[m]
  if ts then
    local cur = call('HGET', M.fresh, SOURCE_TS_MS)
    if not cur or gt(ts, cur) then
      call('HSET', M.fresh, SOURCE_TS_MS, ts, APPLIED_AT_MS, now)
    else
      call('HSET', M.fresh, APPLIED_AT_MS, now)
    end
  else
    call('HSET', M.fresh, APPLIED_AT_MS, now)
  end
  call('HINCRBY', M.fresh, APPLIED_COUNT, n)
end

for s, offset in pairs(top) do
  local cur = call('HGET', OFFSETS, slots[s])
  if not cur or gt(offset, cur) then call('HSET', OFFSETS, slots[s], offset) end
end

return results
