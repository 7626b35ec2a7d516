-- The key record whose secret hashes to ARGV[1], or nil.
-- KEYS[1] <p>{rec}:keyhash, KEYS[2] <p>{rec}:keys
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  return false
end
return redis.call('HGET', KEYS[2], id)
