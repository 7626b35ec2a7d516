-- Replaces an account's health only if nobody changed it since it was read (the new value was
-- computed in Rust by Health::apply from the old one).
-- KEYS[1] <p>{acct}:health:<id>; ARGV[1] the value read ('' for none), ARGV[2] the new value
-- ('' deletes it). Returns 1 when written, 0 on a conflict.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
