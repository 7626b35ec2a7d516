-- Live lease count, last pick time and health of one account.
-- KEYS[1] <p>{acct}:leases:<id>, KEYS[2] <p>{acct}:rt:<id>, KEYS[3] <p>{acct}:health:<id>;
-- ARGV[1] now (unix ms)
-- Returns { live leases, last pick (unix ms, '0' if never), health JSON or '' }.
local live = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local last = redis.call('HGET', KEYS[2], 'last') or '0'
local health = redis.call('GET', KEYS[3]) or ''
return { live, last, health }
