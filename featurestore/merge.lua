-- Commit one bundle: check the writer's lease and the offsets, check every mutation, then merge
-- them all into the version's live keys and advance the offsets. One script, so no other client
-- sees a half-commit; and because nothing is written before every check passed, a refused or
-- malformed bundle leaves the store exactly as it was (Redis does not roll back a script that
-- fails half-way).
--
-- KEYS[1]: the version's offsets hash; KEYS[2]: the writer lease key.
-- ARGV[1]: the version's key prefix ("kr:v7:"); ARGV[2]: the writer's lease value ("" = no lease
-- needed: a backfill into a fresh version); ARGV[3]: n, the number of offset fields; then n
-- fields, n expected values ("" = absent) and n new values; last, the bundle: JSON
-- [[op, feature, entity, [field, value, field, value, ...]], ...], one group per target key.
-- A value depends on op:
--   count: an integer, and \31 expiry for a windowed key; max/tally: an integer; add: ignored; top: score \31 limit; latest: order \t payload;
--   distinct: count \31 expiry \31 cap (field "member|actor"; see featurestore/definitions.py).
-- Every op is associative and commutative, so merging batches in any split of the log gives
-- the state one pass over the whole log would (see featurestore/definitions.py).
local prefix, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

if lease ~= '' and redis.call('GET', KEYS[2]) ~= lease then
  return redis.error_reply('LEASE the writer lease ' .. lease .. ' is no longer held (now: ' .. tostring(redis.call('GET', KEYS[2])) .. ')')
end
for i = 1, n do
  local found = redis.call('HGET', KEYS[1], ARGV[3 + i]) or ''
  if found ~= ARGV[3 + n + i] then
    return redis.error_reply('STALE ' .. ARGV[3 + i] .. ' is at ' .. found .. ', the bundle expected ' .. ARGV[3 + n + i])
  end
end

local function refuse(detail)
  return redis.error_reply('MALFORMED ' .. detail)
end

local function split(text)
  local parts, start = {}, 1
  while true do
    local at = string.find(text, '\31', start, true)
    if not at then
      parts[#parts + 1] = string.sub(text, start)
      return parts
    end
    parts[#parts + 1] = string.sub(text, start, at - 1)
    start = at + 1
  end
end

local TYPES = {count = 'hash', max = 'hash', latest = 'hash', add = 'set', top = 'zset', distinct = 'hash', tally = 'zset'}
local EXPIRY = prefix .. 'expiry'
-- Arguments per variadic call: Lua's unpack() is limited by its C stack.
local CHUNK = 4000

local function type_of(key)
  return redis.call('TYPE', key)['ok']
end

-- Checks one staged (field, value) of op; returns its parsed parts, or nil and why not.
local function parse(op, field, value)
  local m = {field = field, value = value}
  if op == 'count' or op == 'max' or op == 'tally' then
    local v = split(value)
    m.number = tonumber(v[1])
    m.expiry = v[2] and tonumber(v[2])
    if not m.number or (v[2] and not m.expiry) or #v > 2 or (#v == 2 and op ~= 'count') then
      return nil, op .. ' value ' .. value
    end
  elseif op == 'top' then
    local v = split(value)
    m.score, m.limit = tonumber(v[1]), tonumber(v[2])
    if not (m.score and m.limit) then return nil, 'top value ' .. value end
    m.score_text = v[1]
  elseif op == 'latest' then
    local tab = string.find(value, '\t', 1, true)
    if not tab then return nil, 'latest value without an order' end
    m.order = string.sub(value, 1, tab - 1)
  elseif op == 'distinct' then
    local v, bar = split(value), string.find(field, '|', 1, true)
    m.number, m.expiry, m.cap = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
    if not (m.number and m.expiry and m.cap and bar) then return nil, 'distinct ' .. field .. ' ' .. value end
    m.member = string.sub(field, 1, bar - 1)
  end
  return m
end

-- Every check first: the ops, the target keys' types, every value.
local ok, bundle = pcall(cjson.decode, ARGV[4 + 3 * n])
if not ok or type(bundle) ~= 'table' then return refuse('bundle is not JSON') end
local groups = {}
for g = 1, #bundle do
  local op, feature, entity, staged = bundle[g][1], bundle[g][2], bundle[g][3], bundle[g][4]
  if not TYPES[op] or type(feature) ~= 'string' or type(entity) ~= 'string' or type(staged) ~= 'table' then
    return refuse('staged mutation ' .. tostring(op) .. '\31' .. tostring(feature) .. '\31' .. tostring(entity))
  end
  local key = prefix .. feature .. ':' .. entity
  local kind = type_of(key)
  if kind ~= 'none' and kind ~= TYPES[op] then
    return refuse(key .. ' is a ' .. kind .. ', ' .. op .. ' needs a ' .. TYPES[op])
  end
  local group = {op = op, key = key, entries = {}}
  if op == 'distinct' then
    group.ranking = prefix .. feature .. '_rank:' .. entity
    local ranked = type_of(group.ranking)
    if ranked ~= 'none' and ranked ~= 'zset' then return refuse(group.ranking .. ' is a ' .. ranked) end
  end
  for i = 1, #staged, 2 do
    local m, why = parse(op, staged[i], staged[i + 1])
    if not m then return refuse(why) end
    group.entries[#group.entries + 1] = m
  end
  groups[#groups + 1] = group
end

-- Calls `command key [flag] ...` with `args` in chunks of CHUNK (an even number: pairs stay whole).
local function variadic(command, key, args, flag)
  for start = 1, #args, CHUNK do
    local stop = math.min(start + CHUNK - 1, #args)
    if flag then
      redis.call(command, key, flag, unpack(args, start, stop))
    else
      redis.call(command, key, unpack(args, start, stop))
    end
  end
end

-- The current values of `entries`' fields (HMGET) or members (ZMSCORE), one call per chunk.
local function current_values(command, key, entries)
  local values = {}
  for start = 1, #entries, CHUNK do
    local fields = {}
    for i = start, math.min(start + CHUNK - 1, #entries) do fields[#fields + 1] = entries[i].field end
    local found = redis.call(command, key, unpack(fields))
    for i = 1, #fields do
      local value = found[i]
      values[start + i - 1] = value ~= false and value or nil  -- a missing field or member is nil
    end
  end
  return values
end

-- Sums stay integers (counts are), written without an exponent.
local function integer(number)
  return string.format('%d', number)
end

-- Named without the version's prefix, so two versions of one log hold the same index.
local function index_expiry(key, expiry, indexed)
  if expiry and indexed[expiry] == nil then
    indexed[expiry] = true
    redis.call('ZADD', EXPIRY, expiry, string.sub(key, #prefix + 1))
  end
end

local merged, trim = 0, {}
for _, group in ipairs(groups) do
  local op, key, entries, indexed = group.op, group.key, group.entries, {}
  merged = merged + #entries
  if op == 'count' then
    -- Read every field, then write every sum: two calls per key, not one per field.
    local current, sums = current_values('HMGET', key, entries), {}
    for i, m in ipairs(entries) do
      sums[#sums + 1] = m.field
      sums[#sums + 1] = integer(tonumber(current[i] or 0) + m.number)
      index_expiry(key, m.expiry, indexed)
    end
    variadic('HSET', key, sums)
  elseif op == 'tally' then
    local current, scores = current_values('ZMSCORE', key, entries), {}
    for i, m in ipairs(entries) do
      scores[#scores + 1] = integer(tonumber(current[i] or 0) + m.number)
      scores[#scores + 1] = m.field
    end
    variadic('ZADD', key, scores)
  elseif op == 'add' then
    local members = {}
    for i, m in ipairs(entries) do members[i] = m.field end
    variadic('SADD', key, members)
  elseif op == 'top' then
    -- GT: a member keeps its best score, as the Python merge does, whatever the batch order.
    local scored = {}
    for _, m in ipairs(entries) do
      scored[#scored + 1] = m.score_text
      scored[#scored + 1] = m.field
    end
    variadic('ZADD', key, scored, 'GT')
    trim[key] = entries[1].limit
  elseif op == 'latest' or op == 'max' then
    local current, winners = current_values('HMGET', key, entries), {}
    for i, m in ipairs(entries) do
      local now, wins = current[i], false
      if not now then
        wins = true
      elseif op == 'max' then
        wins = tonumber(now) < m.number
      else
        -- The greater (order, payload) wins, as in the Python merge: equal orders tie-break on the payload.
        local tab = string.find(now, '\t', 1, true)
        local order = string.sub(now, 1, tab - 1)
        wins = order < m.order or (order == m.order and string.sub(now, tab + 1) < string.sub(m.value, #m.order + 2))
      end
      if wins then
        winners[#winners + 1] = m.field
        winners[#winners + 1] = m.value
      end
    end
    variadic('HSET', key, winners)
  else -- distinct
    -- An actor counts 1 from their first event on, and 0 again once their count reaches the
    -- cap (a bot). Counts only grow, so each step happens once, whichever bundle (and in
    -- whatever order) brought the events: the ranking ends as the actors below the cap.
    local current, counts, deltas, members = current_values('HMGET', key, entries), {}, {}, {}
    for i, m in ipairs(entries) do
      local before = tonumber(current[i] or 0)
      local now = before + m.number
      counts[#counts + 1] = m.field
      counts[#counts + 1] = integer(now)
      local delta = (before == 0 and 1 or 0) - ((before < m.cap and now >= m.cap) and 1 or 0)
      if delta ~= 0 or before == 0 then  -- a first actor enters the ranking even at 0
        if deltas[m.member] == nil then members[#members + 1] = m.member end
        deltas[m.member] = (deltas[m.member] or 0) + delta
      end
      if indexed[m.expiry] == nil then
        indexed[m.expiry] = true
        redis.call('ZADD', EXPIRY, m.expiry, string.sub(key, #prefix + 1), m.expiry, string.sub(group.ranking, #prefix + 1))
      end
    end
    variadic('HSET', key, counts)
    local ranked = {}
    for i, member in ipairs(members) do ranked[i] = {field = member} end
    local scores, ranking = current_values('ZMSCORE', group.ranking, ranked), {}
    for i, member in ipairs(members) do
      ranking[#ranking + 1] = integer(tonumber(scores[i] or 0) + deltas[member])
      ranking[#ranking + 1] = member
    end
    variadic('ZADD', group.ranking, ranking)
  end
end

-- Compaction in log time: every window whose expiry the log clock (the highest event time seen,
-- HIGH_WATER of the events topic) has passed goes. Each commit removes all of them, so after
-- the last commit of any split of the log the same windows remain, whole.
local clock = 0
for _, mark in ipairs(redis.call('HVALS', prefix .. 'high_water:events')) do
  clock = math.max(clock, tonumber(mark))
end
local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', '(' .. clock)
for i = 1, #expired do
  redis.call('DEL', prefix .. expired[i])
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', EXPIRY, '-inf', '(' .. clock)
end

-- Keep the `limit` highest (score, member): ZSET order breaks score ties by member, so what
-- survives does not depend on which batch brought it.
for key, limit in pairs(trim) do
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
end
for i = 1, n do
  redis.call('HSET', KEYS[1], ARGV[3 + i], ARGV[3 + 2 * n + i])
end
return merged
