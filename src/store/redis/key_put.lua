-- Writes a key record and points its secret hash at it; drops the index entry of a previous hash.
-- KEYS[1] <p>{rec}:keys     hash: key id -> JSON record
-- KEYS[2] <p>{rec}:keyhash  hash: secret hash -> key id
-- ARGV[1] change channel, ARGV[2] id, ARGV[3] hash, ARGV[4] JSON record,
-- ARGV[5] '1' when the record must already exist (an update), with ARGV[6] the revision it
-- must still be at (the record written carries the next: a change read before another one,
-- a rotation among them, must not undo it)
-- Returns 1 when written, 0 when an update found no record, or not at that revision.
local previous = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[5] == '1' then
  if not previous then
    return 0
  end
  local revision = cjson.decode(previous).revision
  if type(revision) ~= 'number' then
    revision = 0
  end
  if revision ~= tonumber(ARGV[6]) then
    return 0
  end
end
if previous then
  local old = cjson.decode(previous).hash
  if old ~= ARGV[3] then
    -- Another key may hold the old hash by now; its index entry must not be lost.
    if redis.call('HGET', KEYS[2], old) == ARGV[2] then
      redis.call('HDEL', KEYS[2], old)
    end
    redis.call('PUBLISH', ARGV[1], 'key:' .. old)
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'key:' .. ARGV[3])
return 1
