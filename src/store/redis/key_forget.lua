-- Forgets a key's live state (its record was deleted): its in-flight count, first use, meter
-- registry and every meter's used and held amounts (the registry lists every meter that has
-- fields). Leases in flight end on their own.
-- KEYS[1..3] as live.lua. ARGV[1] unused, ARGV[2] key id.
-- Returns the number of fields deleted.
local key = ARGV[2]
local fields = { kf(key, 'n'), kf(key, 'first'), kf(key, 'b') }
for bucket in pairs(registry(redis.call('HGET', STATE, fields[3]))) do
  fields[#fields + 1] = kf(key, 'u:' .. bucket)
  fields[#fields + 1] = kf(key, 'h:' .. bucket)
end
return redis.call('HDEL', STATE, unpack(fields))
