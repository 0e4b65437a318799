-- Aggregates (`aggregates:` of a mapping; ARCHITECTURE.md, "Aggregates"): per parent key, a
-- hash of exact figures over the rows that currently render that parent (field names in
-- mapping::layout::aggregate). Generated before change.lua; it calls these functions.
--
--   M.aggregates = { { t = tpl, sums = { field number, ... }, sum_fields = { 'sum:total_cents' },
--                      group_sum_prefixes = { 'group_sum:total_cents:' }, group = field number
--                      or false } }
--   AGG_COUNT = 'count', AGG_GROUP_COUNT = 'group_count:' (generated before this file)
--
-- A change takes back what the row's STORED values contributed (never the record's
-- `before`, which REPLICA IDENTITY DEFAULT leaves empty) and adds what its new values
-- contribute; both go into one table of per-key deltas, so a row that stays under its parent
-- with the same figures writes nothing new, and a replayed change (refused by the position
-- guard before it gets here) adds nothing. Sums are exact decimal text, added digit by digit
-- (Lua numbers are doubles), written in canonical form: no leading zeros, no trailing
-- fractional zeros, '0' for zero. A parent whose count drops to 0 loses its hash; a group
-- whose count drops to 0 loses its fields.

local agg_call = redis.call

-- Sign, integer digits and fraction digits of a decimal text.
local function dec_split(s)
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local i, f = string.match(s, '^(%d+)%.?(%d*)$')
  if not i then error({ err = 'ERR aggregate: not a number: ' .. s }) end
  return neg, i, f
end

local function strip_zeros(d)
  return (string.gsub(d, '^0+', ''))
end

-- |x| >= |y| for digit strings without leading zeros.
local function mag_ge(x, y)
  if #x ~= #y then return #x > #y end
  return x >= y
end

local function mag_add(x, y)
  local out, carry = {}, 0
  local i, j = #x, #y
  while i > 0 or j > 0 or carry > 0 do
    local d = carry + (i > 0 and string.byte(x, i) - 48 or 0) + (j > 0 and string.byte(y, j) - 48 or 0)
    out[#out + 1] = string.char(48 + d % 10)
    carry = math.floor(d / 10)
    i, j = i - 1, j - 1
  end
  return strip_zeros(string.reverse(table.concat(out)))
end

-- x - y for x >= y.
local function mag_sub(x, y)
  local out, borrow = {}, 0
  local i, j = #x, #y
  while i > 0 do
    local d = string.byte(x, i) - 48 - borrow - (j > 0 and string.byte(y, j) - 48 or 0)
    if d < 0 then d, borrow = d + 10, 1 else borrow = 0 end
    out[#out + 1] = string.char(48 + d)
    i, j = i - 1, j - 1
  end
  return strip_zeros(string.reverse(table.concat(out)))
end

-- a + b (negated when `negate_b`), exact, in canonical form.
local function dec_add(a, b, negate_b)
  local na, ia, fa = dec_split(a)
  local nb, ib, fb = dec_split(b)
  if negate_b then nb = not nb end
  local scale = math.max(#fa, #fb)
  local x = strip_zeros(ia .. fa .. string.rep('0', scale - #fa))
  local y = strip_zeros(ib .. fb .. string.rep('0', scale - #fb))
  local neg, m
  if na == nb then
    neg, m = na, mag_add(x, y)
  elseif mag_ge(x, y) then
    neg, m = na, mag_sub(x, y)
  else
    neg, m = nb, mag_sub(y, x)
  end
  if m == '' then return '0' end
  if #m <= scale then m = string.rep('0', scale - #m + 1) .. m end
  local int, frac = string.sub(m, 1, #m - scale), string.sub(m, #m - scale + 1)
  frac = string.gsub(frac, '0+$', '')
  local text = int
  if frac ~= '' then text = int .. '.' .. frac end
  if neg then text = '-' .. text end
  return text
end

local function agg_delta(deltas, key, field, value, sign)
  local d = deltas[key]
  if not d then
    d = { order = {}, by = {}, group_of = {} }
    deltas[key] = d
    deltas[#deltas + 1] = key
  end
  if not d.by[field] then
    d.by[field] = '0'
    d.order[#d.order + 1] = field
  end
  d.by[field] = dec_add(d.by[field], value, sign < 0)
  return d
end

-- Adds (sign 1) or takes back (sign -1) what a row with stored values `vals` contributes to
-- every aggregate of M. `render` renders a template from values (change.lua). Every sum
-- field of the row's scopes is touched, a NULL value as 0, so that a sum field exists
-- exactly while its scope counts a row, whatever the history.
local function agg_collect(M, deltas, vals, sign, render)
  if not M.aggregates then return end
  for _, a in ipairs(M.aggregates) do
    local parent = render(a.t, vals)
    if parent then
      agg_delta(deltas, parent, AGG_COUNT, '1', sign)
      local g = a.group and vals[a.group] or false
      local gcount = g and AGG_GROUP_COUNT .. g
      if g then agg_delta(deltas, parent, gcount, '1', sign) end
      for s, f in ipairs(a.sums) do
        local v = vals[f] or '0'
        agg_delta(deltas, parent, a.sum_fields[s], v, sign)
        if g then
          local field = a.group_sum_prefixes[s] .. g
          local d = agg_delta(deltas, parent, field, v, sign)
          d.group_of[field] = gcount
        end
      end
    end
  end
end

-- Reads the current figures of every key in `deltas` and queues the writes that apply them.
local function agg_plan(deltas, writes)
  for _, key in ipairs(deltas) do
    local d = deltas[key]
    local cur = agg_call('HMGET', key, unpack(d.order))
    local new = {}
    for j, field in ipairs(d.order) do new[field] = dec_add(cur[j] or '0', d.by[field], false) end
    if new[AGG_COUNT] == '0' then
      writes[#writes + 1] = { 'DEL', key }
    else
      local sets, dels = {}, {}
      for j, field in ipairs(d.order) do
        local scope = d.group_of[field] or field
        local emptied = new[scope] == '0' and string.sub(scope, 1, #AGG_GROUP_COUNT) == AGG_GROUP_COUNT
        if emptied then
          if cur[j] then dels[#dels + 1] = field end
        elseif new[field] ~= cur[j] then
          sets[#sets + 1] = field
          sets[#sets + 1] = new[field]
        end
      end
      if #sets > 0 then writes[#writes + 1] = { 'HSET', key, unpack(sets) } end
      if #dels > 0 then writes[#writes + 1] = { 'HDEL', key, unpack(dels) } end
    end
  end
end
