-- Deletes a key record and its hash index entry.
-- KEYS[1] <p>{rec}:keys, KEYS[2] <p>{rec}:keyhash; ARGV[1] change channel, ARGV[2] id
-- Returns 1 when a record was deleted, 0 when there was none.
local previous = redis.call('HGET', KEYS[1], ARGV[2])
if not previous then
  return 0
end
local hash = cjson.decode(previous).hash
redis.call('HDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], hash) == ARGV[2] then
  redis.call('HDEL', KEYS[2], hash)
end
redis.call('PUBLISH', ARGV[1], 'key:' .. hash)
return 1
