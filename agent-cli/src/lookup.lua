-- agent-cli: one lookup in one round trip. Read-only: run with EVALSHA_RO / EVAL_RO.
--
-- KEYS[1]  sink:types:{mapping}     (names: mapping::layout)
-- KEYS[2]  sink:freshness:{mapping}
-- KEYS[3]  the addressed key: the row hash (mode "row"), the unique index string
--          (mode "index"), the relation's sorted set (mode "relation") or a search's
--          sorted set (mode "search": ARGV[3] is the folded prefix; mapping::search)
-- ARGV[1]  mode; with the suffix "+reads" (agent-cli's read cache, read_cache.rs) the reply
--          gets a fifth element: the keys read that are not in KEYS (row keys, include
--          relations and children), so a cached answer can be dropped when one changes
-- ARGV[2]  limit (relation; 0 otherwise)
-- ARGV[3..] (index, relation) the row key template's literal pieces around its placeholder:
--          the row key is these pieces joined by the primary key
--          (mode "range": ARGV[3] highest score, ARGV[4] lowest score, ARGV[5..] the pieces)
--
-- Includes (modes "row" and "index", `include:` of the lookup): KEYS[4..] hold, per include,
-- the child mapping's sink:types and freshness hash; the LAST ARGV is then the JSON text of
-- {"id": primary key (mode "row"), "includes": [{"limit", "key": relation key pieces,
-- "rows": child row key pieces}, ...]} (pieces joined by the found row's primary key), and
-- the reply gets a fourth element: per include [types, freshness, rows newest first] (no
-- rows when the row was not found).
--
-- Returns the JSON text of [types, freshness, rows]: the two bookkeeping hashes as flat
-- field/value arrays and the found rows, each a flat field/value array (no rows: not found).
-- cjson writes an empty Lua table as `{}`: the reader takes that for an empty array. One JSON
-- text rather than nested RESP arrays because the client parses it several times faster (the
-- reply of 10 rows is ~170 strings). Row keys built here come only from the caller's declared
-- template and a primary key stored by the sink.

local types = redis.call('HGETALL', KEYS[1])
local freshness = redis.call('HGETALL', KEYS[2])
local mode = ARGV[1]
local reads = nil
if string.sub(mode, -6) == '+reads' then
  mode = string.sub(mode, 1, -7)
  reads = {}
end
local rows = {}
local include_spec = nil
if #KEYS > 3 then
  include_spec = cjson.decode(ARGV[#ARGV])
end
-- The last ARGV that is a row key piece (the include spec follows it).
local last_piece = #ARGV - (include_spec and 1 or 0)

-- The row key of primary key `id`: the pieces ARGV[from..last_piece] joined by it.
local function row_key(id, from)
  local parts = {ARGV[from]}
  for i = from + 1, last_piece do
    parts[#parts + 1] = id
    parts[#parts + 1] = ARGV[i]
  end
  return table.concat(parts)
end

-- Notes a key read that is not in KEYS (when the caller asked for them).
local function note(key)
  if reads then
    reads[#reads + 1] = key
  end
end

local function push_row(key)
  note(key)
  local h = redis.call('HGETALL', key)
  if #h > 0 then
    rows[#rows + 1] = h
  end
end

-- Primary keys order newest-first on ties: numerically descending (also beyond 2^53, by
-- length then digits), otherwise as numbers, otherwise as strings.
local function id_first(a, b)
  if a:match('^%d+$') and b:match('^%d+$') then
    if #a ~= #b then
      return #a > #b
    end
    return a > b
  end
  local x, y = tonumber(a), tonumber(b)
  if x and y and x ~= y then
    return x > y
  end
  return a > b
end

local function newest_first(p, q)
  if p[2] ~= q[2] then
    return p[2] > q[2]
  end
  return id_first(p[1], q[1])
end

-- The primary keys of the newest `limit` members of `window` (descending, WITHSCORES), newest
-- first. Bounded: if the window is full, its last member may tie with members beyond it, so
-- `tied_from(score)` fetches everything scored at or above the boundary (ascending). With
-- distinct scores the order is final; ties (ordered by member bytes, not by `id_first`) need
-- the sort.
local function newest_in(window, limit, tied_from)
  local first, last, step = 1, #window - 1, 2
  if #window / 2 == limit then
    window = tied_from(window[#window])
    first, last, step = #window - 1, 1, -2
  end
  local members, tied = {}, false
  for i = first, last, step do
    local score = tonumber(window[i + 1])
    tied = tied or (#members > 0 and members[#members][2] == score)
    members[#members + 1] = {window[i], score}
  end
  if tied then
    table.sort(members, newest_first)
  end
  local ids = {}
  for i = 1, math.min(limit, #members) do
    ids[i] = members[i][1]
  end
  return ids
end

-- The primary keys of the `limit` newest children in sorted set `key`, newest first.
local function newest_ids(key, limit)
  return newest_in(redis.call('ZREVRANGE', key, 0, limit - 1, 'WITHSCORES'), limit, function(boundary)
    return redis.call('ZRANGEBYSCORE', key, boundary, '+inf', 'WITHSCORES')
  end)
end

-- Each include's [types, freshness, rows] for the found row's primary key `id` (nil: not
-- found, no rows; the freshness still counts for the answer).
local function read_includes(id)
  local out = {}
  for n, inc in ipairs(include_spec.includes) do
    local children = {}
    if id then
      local key = table.concat(inc.key, id)
      note(key)
      for _, child in ipairs(newest_ids(key, tonumber(inc.limit))) do
        local child_key = table.concat(inc.rows, child)
        note(child_key)
        local h = redis.call('HGETALL', child_key)
        if #h > 0 then
          children[#children + 1] = h
        end
      end
    end
    out[n] = {
      redis.call('HGETALL', KEYS[2 + 2 * n]),
      redis.call('HGETALL', KEYS[3 + 2 * n]),
      children,
    }
  end
  return out
end

local found_id = nil
if mode == 'row' then
  push_row(KEYS[3])
  if include_spec and #rows > 0 then
    found_id = include_spec.id
  end
elseif mode == 'index' then
  local id = redis.call('GET', KEYS[3])
  if id then
    push_row(row_key(id, 3))
    if #rows > 0 then
      found_id = id
    end
  end
elseif mode == 'relation' then
  local limit = tonumber(ARGV[2])
  for _, id in ipairs(newest_ids(KEYS[3], limit)) do
    push_row(row_key(id, 3))
  end
elseif mode == 'range' then
  -- A relation's children scored within inclusive bounds (`range:`; also filtered relations).
  -- ARGV[3] highest score, ARGV[4] lowest ('+inf'/'-inf' when open), ARGV[5..] row key pieces.
  -- Bounded like 'relation': at most `limit` members, plus those tied with the last one.
  local limit, max, min = tonumber(ARGV[2]), ARGV[3], ARGV[4]
  local window = redis.call('ZREVRANGEBYSCORE', KEYS[3], max, min, 'WITHSCORES', 'LIMIT', 0, limit)
  local ids = newest_in(window, limit, function(boundary)
    return redis.call('ZRANGEBYSCORE', KEYS[3], boundary, max, 'WITHSCORES')
  end)
  for _, id in ipairs(ids) do
    push_row(row_key(id, 5))
  end
elseif mode == 'search' then
  -- The first `limit` members whose folded value starts with the prefix, in member order
  -- (folded value, then primary key). UTF-8 text never holds the byte 0xFF, so it bounds
  -- every text that starts with the prefix. A member's row key follows its last NUL.
  local prefix = ARGV[3]
  local members = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. prefix, '[' .. prefix .. '\255',
    'LIMIT', 0, tonumber(ARGV[2]))
  for _, member in ipairs(members) do
    push_row(string.match(member, '%z([^%z]*)$'))
  end
elseif mode == 'aggregate' then
  -- An aggregate's hash (mapping::layout::aggregate), as one "row"; absent: no rows.
  push_row(KEYS[3])
else
  return redis.error_reply('agent-cli lookup: unknown mode ' .. tostring(mode))
end

local included = include_spec and read_includes(found_id) or nil
if reads then
  return cjson.encode({types, freshness, rows, included or {}, reads})
end
if included then
  return cjson.encode({types, freshness, rows, included})
end
return cjson.encode({types, freshness, rows})
