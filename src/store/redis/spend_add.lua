-- Adds to one owner's spend counters (`Store::add_spend`), each kept until its period is over.
-- KEYS[i] <p>{spend:<owner>}:<bucket>
-- ARGV[1] the amount; ARGV[1 + i] unix ms at which KEYS[i] expires
-- Returns each counter's total after the addition, in KEYS' order.
local totals = {}
for i = 1, #KEYS do
  totals[i] = redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[i + 1])
end
return totals
