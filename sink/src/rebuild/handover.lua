-- Hands the rebuilt state over to the readers, atomically (see rebuild.rs, "Handover").
-- Run with `EVAL <script> 3 KEYS... ARGV...` on any connection; the script selects the
-- databases itself (SELECT inside a script does not change the caller's database).
--
-- WATERMARK_LSN, the watermark hashes' LSN field, is a constant the sink puts before this
-- text (mapping::layout::watermark::LSN).
--
-- KEYS (their names: mapping::layout): [1] the rebuild lock `sink:rebuild:lock`,
--   [2] `sink:offsets`, [3] the rebuild metadata `sink:rebuild`, [4] `sink:offsets:run`
--
-- ARGV layout (1-based):
--   [1] live db   [2] staging db   [3] lock token (the value of `sink:rebuild:lock` in the
--   live db that this rebuild set)
--   nt, then nt mapped topics: only `sink:offsets` fields of these topics are compared
--   nf, then nf pairs field, floor: the rebuild's own settled offsets (`{topic}/{partition}`
--       -> last offset consumed and applied or dead-lettered); the staging `sink:offsets`
--       is raised to them first
--   nm, then nm pairs field, value: the `sink:rebuild` metadata written into the new state
--   nw, then nw keys: the sources' watermarks (`sink:watermark:{source}`); once no partition
--       lags, a live watermark ahead of the staging one is carried over (ARCHITECTURE.md,
--       "Source watermark": it covers only offsets the live state had applied, and the rebuilt
--       state holds at least those)
--   the server's run_id, then np, then np fields: every partition the rebuild replayed; the
--       new state marks each as whole under this run (`sink:offsets:run`), so that sinks
--       trust its `sink:offsets` instead of replaying (pipeline/self_heal.rs). A partition
--       that a live sink's assignment marked under this run keeps that marker (run and
--       fencing token, apply/fence.rs), so that the live sink's batches still land
--
-- Returns {'ok'} after `SWAPDB live staging`; {'lock', holder} when the lock no longer holds
-- this token; {'lagging', field, live, staging, ...} when the live sink has applied a record
-- the rebuilt state has not (nothing is swapped: consume more and try again).

local call = redis.call
local LOCK, OFFSETS, META, RUNS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local live, staging, token = ARGV[1], ARGV[2], ARGV[3]
local i = 4
local topics = {}
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  topics[ARGV[i]] = true
end
i = i + 1
local floors = {}
for _ = 1, tonumber(ARGV[i]) do
  floors[#floors + 1] = { ARGV[i + 1], ARGV[i + 2] }
  i = i + 2
end
i = i + 1
local meta = {}
for _ = 1, tonumber(ARGV[i]) do
  meta[#meta + 1] = ARGV[i + 1]
  meta[#meta + 1] = ARGV[i + 2]
  i = i + 2
end

i = i + 1
local watermarks = {}
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  watermarks[#watermarks + 1] = ARGV[i]
end

i = i + 1
local run_id = ARGV[i]
i = i + 1
local marked = {}
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  marked[#marked + 1] = ARGV[i]
end

call('SELECT', live)
local holder = call('GET', LOCK)
if holder ~= token then return { 'lock', tostring(holder) } end
local live_offsets = call('HGETALL', OFFSETS)
local live_watermarks = {}
for j, key in ipairs(watermarks) do
  live_watermarks[j] = call('HGETALL', key)
end
local marks = {}
for _, field in ipairs(marked) do
  local live_mark = call('HGET', RUNS, field)
  marks[#marks + 1] = field
  if live_mark and string.match(live_mark, '^[^:]*') == run_id then
    marks[#marks + 1] = live_mark
  else
    marks[#marks + 1] = run_id
  end
end

call('SELECT', staging)
for _, f in ipairs(floors) do
  local cur = call('HGET', OFFSETS, f[1])
  if not cur or tonumber(f[2]) > tonumber(cur) then
    call('HSET', OFFSETS, f[1], f[2])
  end
end
local lagging = { 'lagging' }
for j = 1, #live_offsets, 2 do
  local field, offset = live_offsets[j], live_offsets[j + 1]
  local topic = string.match(field, '^(.*)/%d+$')
  if topic and topics[topic] then
    local cur = call('HGET', OFFSETS, field)
    if not cur or tonumber(cur) < tonumber(offset) then
      lagging[#lagging + 1] = field
      lagging[#lagging + 1] = offset
      lagging[#lagging + 1] = cur or '-1'
    end
  end
end
if #lagging > 1 then return lagging end

for j, key in ipairs(watermarks) do
  local fields = live_watermarks[j]
  local live_lsn
  for k = 1, #fields, 2 do
    if fields[k] == WATERMARK_LSN then live_lsn = tonumber(fields[k + 1]) end
  end
  local staged = tonumber(call('HGET', key, WATERMARK_LSN))
  if live_lsn and (not staged or staged < live_lsn) then
    call('DEL', key)
    call('HSET', key, unpack(fields))
  end
end

call('DEL', META)
if #meta > 0 then call('HSET', META, unpack(meta)) end
call('DEL', RUNS)
if #marks > 0 then call('HSET', RUNS, unpack(marks)) end
call('SELECT', live)
call('DEL', LOCK)
call('SWAPDB', live, staging)
return { 'ok' }
