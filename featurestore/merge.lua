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
-- [[op, feature, entity, attribute, fields], ...], one group per target key, fields an object
-- {field: value} (for add, an array of members; see featurestore/commit.py). The attribute and
-- the values depend on op:
--   count: attribute the key's expiry in log time ("" for a key without a window), value an integer;
--   max, tally: attribute "", value an integer; top: attribute the limit, value the score;
--   add: attribute "" (a set that never goes), its expiry in log time (as for count), or
--     partition \31 closes_at (a session window, deleted once the events high water of that
--     partition reaches closes_at; see transforms/cooccurrence.py);
--   latest: attribute "", value [order, payload];
--   distinct: attribute expiry \31 cap, value a count (field "member|actor"; see featurestore/definitions.py).
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

local TYPES = {count = 'hash', max = 'hash', latest = 'hash', add = 'set', top = 'zset', distinct = 'hash', tally = 'zset'}
local EXPIRY = prefix .. 'expiry'
-- Arguments per variadic call: Lua's unpack() is limited by its C stack. Even, so pairs stay whole.
local CHUNK = 4000

local function type_of(key)
  return redis.call('TYPE', key)['ok']
end

-- The two parts of "a \31 b", or nil.
local function pair(text)
  local sep = string.find(text, '\31', 1, true)
  if sep then return string.sub(text, 1, sep - 1), string.sub(text, sep + 1) end
end

-- A group's attribute, checked: returns a table of its parts, or nil.
local function attribute(op, text)
  if op == 'count' then
    if text == '' then return {} end
    local expiry = tonumber(text)
    return expiry and {expiry = text}
  elseif op == 'top' then
    local limit = tonumber(text)
    return limit and {limit = limit}
  elseif op == 'distinct' then
    local expiry, cap = pair(text)
    return expiry and tonumber(expiry) and tonumber(cap) and {expiry = expiry, cap = tonumber(cap)}
  elseif op == 'add' and text ~= '' then
    local partition, closes = pair(text)
    if not partition then return tonumber(text) and {expiry = text} end
    return tonumber(partition) and tonumber(closes) and {partition = partition, closes = closes}
  end
  return text == '' and {} or nil
end

-- Every check first: the ops, the target keys' types, every attribute and value.
local ok, bundle = pcall(cjson.decode, ARGV[4 + 3 * n])
if not ok or type(bundle) ~= 'table' then return refuse('bundle is not JSON') end
local groups = {}
for g = 1, #bundle do
  if type(bundle[g]) ~= 'table' then return refuse('staged group ' .. tostring(bundle[g])) end
  local op, feature, entity, text, staged = unpack(bundle[g])
  if not TYPES[op] or type(feature) ~= 'string' or type(entity) ~= 'string' or type(text) ~= 'string'
      or type(staged) ~= 'table' then
    return refuse('staged mutation ' .. tostring(op) .. '\31' .. tostring(feature) .. '\31' .. tostring(entity))
  end
  local group = attribute(op, text)
  if not group then return refuse(op .. ' attribute ' .. text) end
  group.op, group.key, group.fields, group.values, group.numbers = op, prefix .. feature .. ':' .. entity, {}, {}, {}
  local kind = type_of(group.key)
  if kind ~= 'none' and kind ~= TYPES[op] then
    return refuse(group.key .. ' is a ' .. kind .. ', ' .. op .. ' needs a ' .. TYPES[op])
  end
  group.absent = kind == 'none'
  if op == 'distinct' then
    group.ranking, group.members = prefix .. feature .. '_rank:' .. entity, {}
    local ranked = type_of(group.ranking)
    if ranked ~= 'none' and ranked ~= 'zset' then return refuse(group.ranking .. ' is a ' .. ranked) end
    group.ranking_absent = ranked == 'none'
  end
  local fields, values, numbers = group.fields, group.values, group.numbers
  if op == 'add' then
    for i, member in ipairs(staged) do
      if type(member) ~= 'string' then return refuse('add member ' .. tostring(member)) end
      fields[i] = member
    end
  else
    for field, value in pairs(staged) do
      local k = #fields + 1
      fields[k] = field
      if op == 'latest' then
        if type(value) ~= 'table' or type(value[1]) ~= 'string' or type(value[2]) ~= 'string' then
          return refuse('latest value of ' .. field .. ' is not [order, payload]')
        end
        values[k] = value[1] .. '\t' .. value[2]
        numbers[k] = value[1]  -- the order
      elseif type(value) ~= 'number' then
        return refuse(op .. ' value of ' .. field .. ' is not a number')
      else
        numbers[k] = value
      end
      if op == 'distinct' then
        local bar = string.find(field, '|', 1, true)
        if not bar then return refuse('distinct field ' .. field) end
        group.members[k] = string.sub(field, 1, bar - 1)
      end
    end
  end
  groups[#groups + 1] = group
end

-- Calls `command key [flag] ...` with `args` in chunks of CHUNK.
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

-- The current values of `fields` (HMGET) or members (ZMSCORE), one call per chunk; nil where absent.
local function current_values(command, key, fields)
  local values = {}
  for start = 1, #fields, CHUNK do
    local stop = math.min(start + CHUNK - 1, #fields)
    local found = redis.call(command, key, unpack(fields, start, stop))
    for i = start, stop do
      local value = found[i - start + 1]
      values[i] = value ~= false and value or nil
    end
  end
  return values
end

-- Whether `key` is written for the first time: absent before the bundle (`absent`, from the checks)
-- and not written by an earlier group of it. Such a key has no current values to read, and a
-- new TOP no longer than its limit nothing to trim: in a backfill, most keys are new.
local written = {}
local function first_write(key, absent)
  local first = absent and not written[key]
  written[key] = true
  return first
end

-- `current_values`, without the call for a key written for the first time.
local function values_before(command, key, fields, absent)
  if first_write(key, absent) then return {} end
  return current_values(command, key, fields)
end

-- Sums stay integers (counts are), written without an exponent.
local function integer(number)
  return string.format('%d', number)
end

-- Windowed keys and their expiries, indexed in one call once every group merged. Named without
-- the version's prefix, so two versions of one log hold the same index.
local expiries, closings = {}, {}
local function index_expiry(key, expiry)
  expiries[#expiries + 1] = expiry
  expiries[#expiries + 1] = string.sub(key, #prefix + 1)
end
-- Session windows by the events partition whose high water closes them.
local function index_closing(key, partition, closes)
  local index = closings[partition] or {}
  closings[partition] = index
  index[#index + 1] = closes
  index[#index + 1] = string.sub(key, #prefix + 1)
end

local merged, trim = 0, {}
for _, group in ipairs(groups) do
  local op, key, fields, values, numbers = group.op, group.key, group.fields, group.values, group.numbers
  merged = merged + #fields
  if op == 'count' then
    -- Read every field, then write every sum: two calls per key, not one per field.
    local current, sums = values_before('HMGET', key, fields, group.absent), {}
    for i = 1, #fields do
      sums[2 * i - 1], sums[2 * i] = fields[i], integer(tonumber(current[i] or 0) + numbers[i])
    end
    variadic('HSET', key, sums)
    if group.expiry then index_expiry(key, group.expiry) end
  elseif op == 'tally' then
    local current, scores = values_before('ZMSCORE', key, fields, group.absent), {}
    for i = 1, #fields do
      scores[2 * i - 1], scores[2 * i] = integer(tonumber(current[i] or 0) + numbers[i]), fields[i]
    end
    variadic('ZADD', key, scores)
  elseif op == 'add' then
    first_write(key, group.absent)
    variadic('SADD', key, fields)
    if group.partition then index_closing(key, group.partition, group.closes) end
    if group.expiry then index_expiry(key, group.expiry) end
  elseif op == 'top' then
    -- GT: a member keeps its best score, as the Python merge does, whatever the batch order.
    local scored = {}
    for i = 1, #fields do
      scored[2 * i - 1], scored[2 * i] = string.format('%.17g', numbers[i]), fields[i]
    end
    if not first_write(key, group.absent) or #fields > group.limit then trim[key] = group.limit end
    variadic('ZADD', key, scored, 'GT')
  elseif op == 'latest' or op == 'max' then
    local current, winners = values_before('HMGET', key, fields, group.absent), {}
    for i = 1, #fields do
      local now, value, wins = current[i], values[i], false
      if not now then
        wins = true
      elseif op == 'max' then
        wins = tonumber(now) < numbers[i]
      else
        -- The greater (order, payload) wins, as in the Python merge: equal orders tie-break on the payload.
        local tab, new_order = string.find(now, '\t', 1, true), numbers[i]
        local order = string.sub(now, 1, tab - 1)
        wins = order < new_order or (order == new_order and string.sub(now, tab + 1) < string.sub(value, #new_order + 2))
      end
      if wins then
        winners[#winners + 1] = fields[i]
        winners[#winners + 1] = op == 'max' and integer(numbers[i]) or value
      end
    end
    variadic('HSET', key, winners)
  else -- distinct
    -- An actor counts 1 from their first event on, and 0 again once their count reaches the
    -- cap (a bot). Counts only grow, so each step happens once, whichever bundle (and in
    -- whatever order) brought the events: the ranking ends as the actors below the cap.
    local current, counts, deltas, ranked = values_before('HMGET', key, fields, group.absent), {}, {}, {}
    for i = 1, #fields do
      local before = tonumber(current[i] or 0)
      local now = before + numbers[i]
      counts[2 * i - 1], counts[2 * i] = fields[i], integer(now)
      local delta = (before == 0 and 1 or 0) - ((before < group.cap and now >= group.cap) and 1 or 0)
      if delta ~= 0 or before == 0 then  -- a first actor enters the ranking even at 0
        local member = group.members[i]
        if deltas[member] == nil then ranked[#ranked + 1] = member end
        deltas[member] = (deltas[member] or 0) + delta
      end
    end
    variadic('HSET', key, counts)
    local scores, ranking = values_before('ZMSCORE', group.ranking, ranked, group.ranking_absent), {}
    for i, member in ipairs(ranked) do
      ranking[2 * i - 1], ranking[2 * i] = integer(tonumber(scores[i] or 0) + deltas[member]), member
    end
    variadic('ZADD', group.ranking, ranking)
    index_expiry(key, group.expiry)
    index_expiry(group.ranking, group.expiry)
  end
end

variadic('ZADD', EXPIRY, expiries)
for partition, index in pairs(closings) do
  variadic('ZADD', prefix .. 'closing:' .. partition, index)
end

-- Deletes the keys `index` holds with a score in [-inf, `stop`], and their index entries.
local function compact(index, stop)
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', stop)
  for i = 1, #gone do
    redis.call('DEL', prefix .. gone[i])
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', stop)
  end
end

-- Compaction in log time: every window whose expiry the log clock (the highest event time seen,
-- HIGH_WATER of the events topic) has passed goes, and every session window whose partition's
-- high water reached its closing time. Each commit removes all of them, so after the last commit
-- of any split of the log the same windows remain, whole.
local clock = 0
local marks = redis.call('HGETALL', prefix .. 'high_water:events')
for i = 1, #marks, 2 do
  clock = math.max(clock, tonumber(marks[i + 1]))
  compact(prefix .. 'closing:' .. marks[i], marks[i + 1])
end
compact(EXPIRY, '(' .. clock)

-- Keep the `limit` highest (score, member): ZSET order breaks score ties by member, so what
-- survives does not depend on which batch brought it.
for key, limit in pairs(trim) do
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
end
for i = 1, n do
  redis.call('HSET', KEYS[1], ARGV[3 + i], ARGV[3 + 2 * n + i])
end
return merged
