-- Live lease count and last pick time of one account.
-- KEYS[1] <p>{acct}:leases:<id>, KEYS[2] <p>{acct}:rt:<id>; ARGV[1] now (unix ms)
-- Returns { live leases, last pick (unix ms, '0' if never) }.
local live = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local last = redis.call('HGET', KEYS[2], 'last') or '0'
return { live, last }
