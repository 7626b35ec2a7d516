-- Takes the lease on the account the policy chose, if it still has room (another instance may
-- have filled it since pick_read.lua), marks it picked, and sets the session binding.
-- KEYS[1] <p>{acct}:seq, KEYS[2] <p>{acct}:leases:<id>, KEYS[3] <p>{acct}:rt:<id>,
-- KEYS[4] <p>{acct}:sess:<session> (only when ARGV[6] ~= '0')
-- ARGV[1] lease id, ARGV[2] now, ARGV[3] lease deadline, ARGV[4] runtime TTL (ms),
-- ARGV[5] cap or -1, ARGV[6] session binding TTL (ms) or '0' (leave it), ARGV[7] account id
-- Returns 1 when taken, 0 when the account is full.
local now = ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local cap = tonumber(ARGV[5])
if cap >= 0 and redis.call('ZCARD', KEYS[2]) >= cap then
  return 0
end
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(latest[2]) - tonumber(now))
if ttl < 1 then
  ttl = 1
end
redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl))
local last = tonumber(redis.call('HGET', KEYS[3], 'last') or '0')
if tonumber(now) > last then
  last = tonumber(now)
end
redis.call('HSET', KEYS[3], 'seq', string.format('%d', seq), 'last', string.format('%d', last))
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if ARGV[6] ~= '0' then
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[6])
end
return 1
