-- Merge one staged batch shard into a version's live keys, then delete the shard.
-- KEYS[1]: the stage hash; ARGV[1]: the version's key prefix ("kr:v7:").
-- Each staged field is op \31 feature \31 entity \31 field; its value depends on op:
--   count/max: an integer; add: ignored; top: score \31 limit; latest: order \t payload.
-- Every op is associative and commutative, so merging batches in any split of the log
-- gives the state one pass over the whole log would (see featurestore/definitions.py).
local prefix = ARGV[1]
local staged = redis.call('HGETALL', KEYS[1])
local trim = {}

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

for i = 1, #staged, 2 do
  local p = split(staged[i])
  local op, key, field, value = p[1], prefix .. p[2] .. ':' .. p[3], p[4], staged[i + 1]
  if op == 'count' then
    redis.call('HINCRBY', key, field, value)
  elseif op == 'add' then
    redis.call('SADD', key, field)
  elseif op == 'top' then
    local v = split(value)
    redis.call('ZADD', key, v[1], field)
    trim[key] = tonumber(v[2])
  elseif op == 'latest' then
    local current = redis.call('HGET', key, field)
    local order = string.sub(value, 1, (string.find(value, '\t', 1, true) or 0) - 1)
    if not current or string.sub(current, 1, #order) < order then
      redis.call('HSET', key, field, value)
    end
  elseif op == 'max' then
    local current = redis.call('HGET', key, field)
    if not current or tonumber(current) < tonumber(value) then
      redis.call('HSET', key, field, value)
    end
  else
    return redis.error_reply('unknown merge op ' .. op)
  end
end

-- Keep the `limit` highest (score, member): ZSET order breaks score ties by member, so
-- what survives does not depend on which batch brought it.
for key, limit in pairs(trim) do
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
end
redis.call('DEL', KEYS[1])
return #staged / 2
