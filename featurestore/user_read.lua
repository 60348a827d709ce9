-- A user's stamp, and their features only when the stamp differs from the one the caller holds.
-- KEYS: HISTORY, PROFILE, SEEN, DISLIKED, PROGRESS of one user.
-- ARGV[1]: "1" when ARGV[2..] hold a stamp to compare with ("0": always return the features);
-- ARGV[2..6]: history size, newest history member, seen size, oldest seen member, disliked size;
-- ARGV[7..]: the PROFILE fields' values ("" for none), after them the PROFILE field names.
-- Returns {stamp} when unchanged, else {stamp, history newest first, profile, seen, disliked, progress}.
local fields = {}
local field_count = (#ARGV - 6) / 2
for i = 1, field_count do fields[i] = ARGV[6 + field_count + i] end
local stamp = {
  tostring(redis.call('ZCARD', KEYS[1])),
  redis.call('ZREVRANGE', KEYS[1], 0, 0)[1] or '',
  tostring(redis.call('ZCARD', KEYS[3])),
  redis.call('ZRANGE', KEYS[3], 0, 0)[1] or '',
  tostring(redis.call('HLEN', KEYS[4])),
}
for _, value in ipairs(redis.call('HMGET', KEYS[2], unpack(fields))) do stamp[#stamp + 1] = value or '' end
if ARGV[1] == '1' then
  local same = true
  for i = 1, #stamp do
    if stamp[i] ~= ARGV[1 + i] then same = false break end
  end
  if same then return {stamp} end
end
return {stamp, redis.call('ZREVRANGE', KEYS[1], 0, -1), redis.call('HMGET', KEYS[2], unpack(fields)),
        redis.call('ZRANGE', KEYS[3], 0, -1), redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5])}
