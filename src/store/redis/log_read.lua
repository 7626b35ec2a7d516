-- The newest entries of a log index, newest first (false for an entry gone meanwhile).
-- KEYS[1] <p>{log}:all, <p>{log}:key:<key id> or <p>{log}:account:<account id>,
-- KEYS[2] <p>{log}:entries
-- ARGV[1] the index of the last entry wanted (limit - 1, computed by the caller: no arithmetic on
-- big numbers in Lua)
local members = redis.call('ZREVRANGE', KEYS[1], 0, ARGV[1])
local out = {}
for i = 1, #members, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(members, i, math.min(i + 999, #members)))
  for _, json in ipairs(part) do
    out[#out + 1] = json
  end
end
return out
