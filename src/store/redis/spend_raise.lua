-- Raises one owner's spend counter to at least an amount (`Store::raise_spend`).
-- KEYS[1] <p>{spend:<owner>}:<bucket>
-- ARGV[1] the amount; ARGV[2] unix ms at which KEYS[1] expires
-- Returns the counter's total.
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
if total < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  total = tonumber(ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return total
