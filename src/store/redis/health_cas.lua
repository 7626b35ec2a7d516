-- Replaces an account's health only if nobody changed it since it was read (the new value was
-- computed in Rust by Health::apply from the old one).
-- KEYS[1..3] as live.lua. ARGV[1] unused, ARGV[2] account id, ARGV[3] the value read ('' for
-- none), ARGV[4] the new value ('' deletes it). Returns 1 when written, 0 on a conflict.
local field = af(ARGV[2], 'h')
local current = redis.call('HGET', STATE, field) or ''
if current ~= ARGV[3] then
  return 0
end
if ARGV[4] == '' then
  redis.call('HDEL', STATE, field)
else
  redis.call('HSET', STATE, field, ARGV[4])
end
return 1
