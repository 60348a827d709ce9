-- Commit one bundle: check the writer's lease and the offsets, check every mutation and every
-- stored value it merges with, then merge them all into the version's live keys and advance the
-- offsets. One script, so no other client sees a half-commit; and because nothing is written
-- before every check passed, and no write after them can fail, a refused or malformed bundle (or
-- a corrupt stored value) leaves the store exactly as it was (Redis does not roll back a script
-- that fails half-way).
--
-- The key layout, separators and op names are featurestore/layout.py's: featurestore/commit.py
-- prepends them to this script as the table LAYOUT (layout.merge_contract()).
--
-- KEYS[1]: the version's offsets hash; KEYS[2]: the writer lease key.
-- ARGV[1]: the version's key prefix ("kr:v7:"); ARGV[2]: the writer's lease value ("" = no lease
-- needed: a backfill into a fresh version); ARGV[3]: n, the number of offset fields; then n
-- fields, n expected values ("" = absent) and n new values; last, the bundle: MessagePack
-- [[op, feature, entity, attribute, fields], ...], one group per target key, fields a map
-- {field: value} (for add, an array of members; see featurestore/commit.py). The attribute and
-- the values depend on op:
--   count: attribute the key's expiry in log time ("" for a key without a window), value an integer;
--   max, tally: attribute "", value an integer; top: attribute the limit, value the score;
--   add: attribute "" (a set that never goes), its expiry in log time (as for count), or
--     partition STAGE_SEPARATOR closes_at (a session window, deleted once the events high water of
--     that partition reaches closes_at; see transforms/cooccurrence.py);
--   latest: attribute "", value [order, payload];
--   distinct: attribute [expiry, cap], value a count (field member DISTINCT_SEPARATOR actor; see
--     featurestore/definitions.py).
-- Every op is associative and commutative, so merging batches in any split of the log gives
-- the state one pass over the whole log would (see featurestore/definitions.py).
--
-- Every event of the log pays this script's cost per group and per field on Redis's one thread,
-- so that cost bounds a backfill: each group is checked into one flat argument list, which a key
-- written for the first time (most keys of a backfill) hands to its write as it is. Numbers travel
-- as Lua numbers: redis.call formats them as %.17g, which round-trips every score and writes an
-- integer below 10^17 (any count or time in ms) exactly and without an exponent.
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

local OP, TYPES = LAYOUT.OP, LAYOUT.TYPE
local LATEST_SEPARATOR, STAGE_SEPARATOR = LAYOUT.LATEST_SEPARATOR, LAYOUT.STAGE_SEPARATOR
-- The flat list's layout per op: ZADD takes (score, member) pairs, HSET (field, value) pairs.
local SCORE_FIRST = {[OP.TOP] = true, [OP.TALLY] = true}
-- The ops that merge with the stored values of a key's fields (HMGET): each is checked before any write.
local READS_STORED = {[OP.COUNT] = true, [OP.MAX] = true, [OP.LATEST] = true, [OP.DISTINCT] = true}
local EXPIRY = prefix .. LAYOUT.EXPIRY_INDEX
local CLOCK = prefix .. LAYOUT.CLOCK
local function closing_index(partition)
  return prefix .. LAYOUT.CLOSING_INDEX .. partition
end
-- Arguments per variadic call: Lua's unpack() is limited by its C stack. Even, so pairs stay whole.
local CHUNK = 4000

-- A key's type, or 'none'. EXISTS first: TYPE's status reply costs a Lua table, and most keys
-- of a backfill do not exist yet.
local function type_of(key)
  if redis.call('EXISTS', key) == 0 then return 'none' end
  return redis.call('TYPE', key)['ok']
end

local function is_number_text(text)
  return type(text) == 'string' and tonumber(text) ~= nil
end

-- The two parts of "a STAGE_SEPARATOR b", or nil.
local function pair(text)
  local sep = string.find(text, STAGE_SEPARATOR, 1, true)
  if sep then return string.sub(text, 1, sep - 1), string.sub(text, sep + 1) end
end

-- Checks a group's attribute into `group`; false if it is malformed.
local function read_attribute(group, op, attribute)
  if op == OP.COUNT then
    if attribute == '' then return true end
    group.expiry = attribute
    return is_number_text(attribute)
  elseif op == OP.TOP then
    group.limit = attribute
    return type(attribute) == 'number'
  elseif op == OP.DISTINCT then
    if type(attribute) ~= 'table' then return false end
    group.expiry, group.cap = attribute[1], attribute[2]
    return is_number_text(group.expiry) and type(group.cap) == 'number'
  elseif op == OP.ADD and attribute ~= '' then
    if type(attribute) ~= 'string' then return false end
    local partition, closes = pair(attribute)
    if not partition then
      group.expiry = attribute
      return tonumber(attribute) ~= nil
    end
    group.partition, group.closes = partition, closes
    return tonumber(partition) ~= nil and tonumber(closes) ~= nil
  end
  return attribute == ''
end

-- Checks a group's values into its flat argument list; false and the field if one is malformed.
-- latest: value order LATEST_SEPARATOR payload (what the key stores), its order kept in `orders`;
-- distinct: the member of each member DISTINCT_SEPARATOR actor field kept in `members`.
local function read_fields(group, op, staged)
  local flat, k = group.flat, 0
  if op == OP.ADD then
    for i = 1, #staged do
      if type(staged[i]) ~= 'string' then return false, tostring(staged[i]) end
    end
    group.flat = staged
    return true
  end
  local score_first, latest, distinct = SCORE_FIRST[op], op == OP.LATEST, op == OP.DISTINCT
  for field, value in pairs(staged) do
    if latest then
      if type(value) ~= 'table' or type(value[1]) ~= 'string' or type(value[2]) ~= 'string' then return false, field end
      group.orders[k / 2 + 1] = value[1]
      value = value[1] .. LATEST_SEPARATOR .. value[2]
    elseif type(value) ~= 'number' then
      return false, field
    elseif distinct then
      local bar = type(field) == 'string' and string.find(field, LAYOUT.DISTINCT_SEPARATOR, 1, true)
      if not bar then return false, field end
      group.members[k / 2 + 1] = string.sub(field, 1, bar - 1)
    end
    if score_first then
      flat[k + 1], flat[k + 2] = value, field
    else
      flat[k + 1], flat[k + 2] = field, value
    end
    k = k + 2
  end
  return true
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

-- The current values of the fields (HMGET) or members (ZMSCORE) at every `offset` + 2i of `flat`,
-- one call per chunk; nil where absent.
local function current_values(command, key, flat, offset)
  local fields = {}
  for i = 1, #flat / 2 do fields[i] = flat[2 * i - 1 + offset] end
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

-- Whether a stored value is one `op` can merge with: a number, or a latest's order and payload.
local function mergeable(op, stored)
  if op == OP.LATEST then return string.find(stored, LATEST_SEPARATOR, 1, true) ~= nil end
  return tonumber(stored) ~= nil
end

-- Reads the stored values a group merges with into `group.stored`; the field whose stored value it
-- cannot merge with, if one is. A key an earlier group of the bundle writes is read again when it
-- merges (`group.reread`): what that group wrote is checked already, the rest of the key here.
local function read_stored(group)
  local stored = current_values('HMGET', group.key, group.flat, 0)
  for i = 1, #group.flat / 2 do
    if stored[i] and not mergeable(group.op, stored[i]) then return group.flat[2 * i - 1] end
  end
  group.stored = stored
end

-- The type a key must have, or nil: refuses a key that holds another (WRONGTYPE half-way through).
local function require_type(key, wanted, planned)
  local kind = planned[key] or type_of(key)
  if kind ~= 'none' and kind ~= wanted then return refuse(key .. ' is a ' .. kind .. ', not a ' .. wanted) end
end

-- Every check first: the ops, the target keys' types, every attribute and value, and every stored
-- value a merge reads.
local ok, bundle = pcall(cmsgpack.unpack, ARGV[4 + 3 * n])
if not ok or type(bundle) ~= 'table' then return refuse('bundle is not MessagePack') end
local groups, planned, partitions = {}, {}, {}
for g = 1, #bundle do
  local staged_group = bundle[g]
  if type(staged_group) ~= 'table' then return refuse('staged group ' .. tostring(staged_group)) end
  local op, feature, entity, attribute, staged = staged_group[1], staged_group[2], staged_group[3], staged_group[4],
      staged_group[5]
  if not TYPES[op] or type(feature) ~= 'string' or type(entity) ~= 'string' or type(staged) ~= 'table' then
    return refuse('staged mutation ' .. tostring(op) .. STAGE_SEPARATOR .. tostring(feature) .. STAGE_SEPARATOR ..
        tostring(entity))
  end
  local group = {op = op, key = prefix .. feature .. LAYOUT.KEY_SEPARATOR .. entity, flat = {},
                 orders = op == OP.LATEST and {} or nil, members = op == OP.DISTINCT and {} or nil}
  if not read_attribute(group, op, attribute) then return refuse(op .. ' attribute ' .. tostring(attribute)) end
  -- A key an earlier group of the bundle writes counts as existing with that group's type: so two
  -- types for one new key are refused here, not half-way through the writes, and only a key's
  -- first group skips reading its current values.
  local kind = planned[group.key] or type_of(group.key)
  if kind ~= 'none' and kind ~= TYPES[op] then
    return refuse(group.key .. ' is a ' .. kind .. ', ' .. op .. ' needs a ' .. TYPES[op])
  end
  group.absent, group.reread = kind == 'none', planned[group.key] ~= nil
  planned[group.key] = TYPES[op]
  if op == OP.DISTINCT then
    group.ranking = prefix .. feature .. LAYOUT.RANKING_SUFFIX .. LAYOUT.KEY_SEPARATOR .. entity
    local ranked = planned[group.ranking] or type_of(group.ranking)
    if ranked ~= 'none' and ranked ~= 'zset' then return refuse(group.ranking .. ' is a ' .. ranked) end
    group.ranking_absent = ranked == 'none'
    planned[group.ranking] = 'zset'
  end
  if group.partition then partitions[group.partition] = true end
  local fields_ok, field = read_fields(group, op, staged)
  if not fields_ok then return refuse(op .. ' value of ' .. tostring(field) .. ' in ' .. group.key) end
  if READS_STORED[op] and not group.absent then
    local unmergeable = read_stored(group)
    if unmergeable then
      return refuse(op .. ' cannot merge with the stored value of ' .. unmergeable .. ' in ' .. group.key)
    end
  end
  groups[g] = group
end
-- The indexes and the log clock that the writes and the compaction below read and write.
local refused = require_type(EXPIRY, 'zset', planned) or require_type(CLOCK, 'hash', planned)
if refused then return refused end
local marks = redis.call('HGETALL', CLOCK)
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) == nil then return refuse(CLOCK .. ' holds ' .. marks[i + 1] .. ' for ' .. marks[i]) end
  partitions[marks[i]] = true
end
for partition in pairs(partitions) do
  refused = require_type(closing_index(partition), 'zset', planned)
  if refused then return refused end
end

-- The stored values a group merges with: none for a key the bundle creates, else read by the checks.
local function stored_values(group)
  if group.absent then return {} end
  if group.reread then return current_values('HMGET', group.key, group.flat, 0) end
  return group.stored
end

-- Adds `current` to the values at every `offset` + 2i of `flat` (a sum's merge), in place.
local function add_current(current, flat, offset)
  for i = 1, #flat / 2 do  -- not #current: its absent values are holes
    local at = 2 * i - 1 + offset
    flat[at] = tonumber(current[i] or 0) + flat[at]
  end
end

-- Windowed keys and their expiries, indexed in one call once every group merged, each at its first
-- write: the window a key names fixes its expiry, so a key that exists is indexed already. Named
-- without the version's prefix, so two versions of one log hold the same index.
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

-- The winners among (field, value) pairs of `flat` against the key's current values: a max's
-- greater number, a latest's greater (order, payload).
local function winners_of(group)
  local op, flat = group.op, group.flat
  local current, winners = stored_values(group), {}
  for i = 1, #flat / 2 do
    local now, value, wins = current[i], flat[2 * i], false
    if not now then
      wins = true
    elseif op == OP.MAX then
      wins = tonumber(now) < value
    else
      -- The greater (order, payload) wins, as in the Python merge: equal orders tie-break on the payload.
      local tab, new_order = string.find(now, LATEST_SEPARATOR, 1, true), group.orders[i]
      local order = string.sub(now, 1, tab - 1)
      wins = order < new_order or (order == new_order and string.sub(now, tab + 1) < string.sub(value, #new_order + 2))
    end
    if wins then
      winners[#winners + 1] = flat[2 * i - 1]
      winners[#winners + 1] = value
    end
  end
  return winners
end

-- An actor counts 1 from their first event on, and 0 again once their count reaches the cap (a
-- bot). Counts only grow, so each step happens once, whichever bundle (and in whatever order)
-- brought the events: the ranking ends as the actors below the cap.
local function merge_distinct(group)
  local key, flat, cap = group.key, group.flat, group.cap
  local current = stored_values(group)
  local deltas, ranked = {}, {}
  for i = 1, #flat / 2 do
    local before = tonumber(current[i] or 0)
    local now = before + flat[2 * i]
    flat[2 * i] = now
    local delta = (before == 0 and 1 or 0) - ((before < cap and now >= cap) and 1 or 0)
    if delta ~= 0 or before == 0 then  -- a first actor enters the ranking even at 0
      local member = group.members[i]
      if deltas[member] == nil then ranked[#ranked + 1] = member end
      deltas[member] = (deltas[member] or 0) + delta
    end
  end
  variadic('HSET', key, flat)
  local ranking = {}
  for i, member in ipairs(ranked) do
    ranking[2 * i - 1], ranking[2 * i] = deltas[member], member
  end
  if not group.ranking_absent then add_current(current_values('ZMSCORE', group.ranking, ranking, 1), ranking, 0) end
  variadic('ZADD', group.ranking, ranking)
  if group.absent then
    index_expiry(key, group.expiry)
    index_expiry(group.ranking, group.expiry)
  end
end

local merged, trim = 0, {}
for _, group in ipairs(groups) do
  local op, key, flat = group.op, group.key, group.flat
  if op == OP.ADD then
    merged = merged + #flat
    variadic('SADD', key, flat)
    if group.absent and group.partition then index_closing(key, group.partition, group.closes) end
    if group.absent and group.expiry then index_expiry(key, group.expiry) end
  else
    merged = merged + #flat / 2
    if op == OP.COUNT then
      if not group.absent then add_current(stored_values(group), flat, 1) end
      variadic('HSET', key, flat)
      if group.absent and group.expiry then index_expiry(key, group.expiry) end
    elseif op == OP.TALLY then
      if not group.absent then add_current(current_values('ZMSCORE', key, flat, 1), flat, 0) end
      variadic('ZADD', key, flat)
    elseif op == OP.TOP then
      -- GT: a member keeps its best score, as the Python merge does, whatever the batch order.
      -- A new TOP no longer than its limit has nothing to trim.
      if not group.absent or #flat / 2 > group.limit then trim[key] = group.limit end
      variadic('ZADD', key, flat, 'GT')
    elseif op == OP.LATEST or op == OP.MAX then
      variadic('HSET', key, group.absent and flat or winners_of(group))
    else
      merge_distinct(group)
    end
  end
end

variadic('ZADD', EXPIRY, expiries)
for partition, index in pairs(closings) do
  variadic('ZADD', closing_index(partition), index)
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
marks = redis.call('HGETALL', CLOCK)
for i = 1, #marks, 2 do
  clock = math.max(clock, tonumber(marks[i + 1]))
  compact(closing_index(marks[i]), marks[i + 1])
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
