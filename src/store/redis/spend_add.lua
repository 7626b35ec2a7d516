-- Adds to one owner's spend counters (`Store::add_spend`), each kept until its period is over,
-- once per charge: a call made again (fred sends a call again when its reply was lost) adds
-- nothing and answers the totals.
-- KEYS[1] <p>{spend:<owner>}:c:<charge> (the charge's marker, a minute), KEYS[1 + i]
-- <p>{spend:<owner>}:<bucket>
-- ARGV[1] the amount; ARGV[1 + i] unix ms at which KEYS[1 + i] expires
-- Returns each counter's total after the addition, in KEYS' order.
local first = redis.call('SET', KEYS[1], '1', 'NX', 'PX', 60000)
local totals = {}
for i = 2, #KEYS do
  if first then
    totals[i - 1] = redis.call('INCRBY', KEYS[i], ARGV[1])
    redis.call('PEXPIREAT', KEYS[i], ARGV[i])
  else
    totals[i - 1] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
return totals
