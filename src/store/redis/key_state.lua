-- Reads a key's live state for the key-info view (expired leases swept first).
-- KEYS[1..3] as live.lua. ARGV[1] '<p>{live}:swept:', ARGV[2] now (unix ms), ARGV[3] key id,
-- then the buckets wanted.
-- Returns {leases in flight, first use or '', used 1, held 1, used 2, held 2, ...}.
local now, key = tonumber(ARGV[2]), ARGV[3]
if due(redis.call('HGET', STATE, 'kl:sweep'), now) then
  sweep_keys(now)
end
local fields = { kf(key, 'n'), kf(key, 'first') }
for i = 4, #ARGV do
  fields[#fields + 1] = kf(key, 'u:' .. ARGV[i])
  fields[#fields + 1] = kf(key, 'h:' .. ARGV[i])
end
local values = redis.call('HMGET', STATE, unpack(fields))
local out = { tonumber(values[1] or '0'), values[2] or '' }
for i = 3, #fields do
  out[i] = values[i] or '0'
end
return out
