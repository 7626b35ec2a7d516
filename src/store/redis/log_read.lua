-- The newest entries of a log index, newest first (nil for an entry gone meanwhile).
-- KEYS[1] <p>{log}:all or <p>{log}:key:<key id>, KEYS[2] <p>{log}:entries
-- ARGV[1] the index of the last entry wanted (limit - 1, computed by the caller: no arithmetic on
-- big numbers in Lua)
local members = redis.call('ZREVRANGE', KEYS[1], 0, ARGV[1])
local out = {}
for i, member in ipairs(members) do
  out[i] = redis.call('HGET', KEYS[2], member)
end
return out
