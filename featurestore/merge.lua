-- Commit one bundle: check the writer's lease and the offsets, check every staged mutation,
-- then merge them all into the version's live keys and advance the offsets. One script, so no
-- other client sees a half-commit; and because nothing is written before every check passed,
-- a refused or malformed bundle leaves the store exactly as it was (Redis does not roll back a
-- script that fails half-way).
--
-- KEYS[1]: the version's offsets hash; KEYS[2]: the writer lease key; KEYS[3..]: stage hashes.
-- ARGV[1]: the version's key prefix ("kr:v7:"); ARGV[2]: the writer's lease value ("" = no lease
-- needed: a backfill into a fresh version); ARGV[3]: n, the number of offset fields; then n
-- fields, n expected values ("" = absent) and n new values.
-- Each staged field is op \31 feature \31 entity \31 field; its value depends on op:
--   count: an integer, and \31 expiry for a windowed key; max/tally: an integer; add: ignored; top: score \31 limit; latest: order \t payload;
--   distinct: count \31 expiry \31 cap (field "member|actor"; see featurestore/definitions.py).
-- Every op is associative and commutative, so merging batches in any split of the log gives
-- the state one pass over the whole log would (see featurestore/definitions.py).
local prefix, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

local function drop_stages()
  for s = 3, #KEYS do redis.call('DEL', KEYS[s]) end
end

local function refuse(kind, detail)
  drop_stages()
  return redis.error_reply(kind .. ' ' .. detail)
end

if lease ~= '' and redis.call('GET', KEYS[2]) ~= lease then
  return refuse('LEASE', 'the writer lease ' .. lease .. ' is no longer held (now: ' .. tostring(redis.call('GET', KEYS[2])) .. ')')
end
for i = 1, n do
  local found = redis.call('HGET', KEYS[1], ARGV[3 + i]) or ''
  if found ~= ARGV[3 + n + i] then
    return refuse('STALE', ARGV[3 + i] .. ' is at ' .. found .. ', the bundle expected ' .. ARGV[3 + n + i])
  end
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

local function type_of(key)
  return redis.call('TYPE', key)['ok']
end
local merges = {}
for s = 3, #KEYS do
  local staged = redis.call('HGETALL', KEYS[s])
  for i = 1, #staged, 2 do
    local p = split(staged[i])
    local op, value = p[1], staged[i + 1]
    if #p ~= 4 or not TYPES[op] then
      return refuse('MALFORMED', 'staged mutation ' .. staged[i])
    end
    local key = prefix .. p[2] .. ':' .. p[3]
    local kind = type_of(key)
    if kind ~= 'none' and kind ~= TYPES[op] then
      return refuse('MALFORMED', key .. ' is a ' .. kind .. ', ' .. op .. ' needs a ' .. TYPES[op])
    end
    local m = {op = op, key = key, field = p[4], value = value}
    if op == 'count' or op == 'max' or op == 'tally' then
      local v = split(value)
      m.number = tonumber(v[1])
      m.expiry = v[2] and tonumber(v[2])
      if not m.number or (v[2] and not m.expiry) or #v > 2 or (#v == 2 and op ~= 'count') then
        return refuse('MALFORMED', op .. ' value ' .. value)
      end
    elseif op == 'top' then
      local v = split(value)
      m.score, m.limit = tonumber(v[1]), tonumber(v[2])
      if not (m.score and m.limit) then return refuse('MALFORMED', 'top value ' .. value) end
    elseif op == 'latest' then
      local tab = string.find(value, '\t', 1, true)
      if not tab then return refuse('MALFORMED', 'latest value without an order') end
      m.order = string.sub(value, 1, tab - 1)
    elseif op == 'distinct' then
      local v, bar = split(value), string.find(p[4], '|', 1, true)
      m.number, m.expiry, m.cap = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
      if not (m.number and m.expiry and m.cap and bar) then return refuse('MALFORMED', 'distinct ' .. p[4] .. ' ' .. value) end
      m.member, m.ranking = string.sub(p[4], 1, bar - 1), prefix .. p[2] .. '_rank:' .. p[3]
      local ranked = type_of(m.ranking)
      if ranked ~= 'none' and ranked ~= 'zset' then return refuse('MALFORMED', m.ranking .. ' is a ' .. ranked) end
    end
    merges[#merges + 1] = m
  end
end

local trim = {}
for _, m in ipairs(merges) do
  if m.op == 'count' then
    redis.call('HINCRBY', m.key, m.field, m.number)
    if m.expiry then
      redis.call('ZADD', EXPIRY, m.expiry, string.sub(m.key, #prefix + 1))
    end
  elseif m.op == 'tally' then
    redis.call('ZINCRBY', m.key, m.number, m.field)
  elseif m.op == 'add' then
    redis.call('SADD', m.key, m.field)
  elseif m.op == 'top' then
    -- GT: a member keeps its best score, as the Python merge does, whatever the batch order.
    redis.call('ZADD', m.key, 'GT', m.score, m.field)
    trim[m.key] = m.limit
  elseif m.op == 'latest' then
    -- The greater (order, payload) wins, as in the Python merge: equal orders tie-break on the payload.
    local current = redis.call('HGET', m.key, m.field)
    local tab = current and string.find(current, '\t', 1, true)
    local order = current and string.sub(current, 1, tab - 1)
    if not current or order < m.order or (order == m.order and string.sub(current, tab + 1) < string.sub(m.value, #m.order + 2)) then
      redis.call('HSET', m.key, m.field, m.value)
    end
  elseif m.op == 'distinct' then
    -- An actor counts 1 from their first event on, and 0 again once their count reaches the
    -- cap (a bot). Counts only grow, so each step happens once, whichever bundle (and in
    -- whatever order) brought the events: the ranking ends as the actors below the cap.
    local now = redis.call('HINCRBY', m.key, m.field, m.number)
    local before = now - m.number
    local delta = (before == 0 and 1 or 0) - ((before < m.cap and now >= m.cap) and 1 or 0)
    if delta ~= 0 or before == 0 then
      redis.call('ZINCRBY', m.ranking, delta, m.member)
    end
    -- Named without the version's prefix, so two versions of one log hold the same index.
    redis.call('ZADD', EXPIRY, m.expiry, string.sub(m.key, #prefix + 1), m.expiry, string.sub(m.ranking, #prefix + 1))
  else -- max
    local current = redis.call('HGET', m.key, m.field)
    if not current or tonumber(current) < m.number then
      redis.call('HSET', m.key, m.field, m.value)
    end
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
drop_stages()
return #merges
