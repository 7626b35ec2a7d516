-- Takes a concurrency lease on one key if its cap allows.
-- KEYS[1] <p>{k:<key id>}:leases  sorted set: lease id -> deadline (unix ms, the caller's clock)
-- ARGV[1] lease id, ARGV[2] now (unix ms), ARGV[3] deadline (unix ms), ARGV[4] cap or -1 (none)
-- Returns 1 when granted, 0 when the key is at its cap.
local leases = KEYS[1]
redis.call('ZREMRANGEBYSCORE', leases, '-inf', ARGV[2])
local cap = tonumber(ARGV[4])
-- Re-admitting a lease already held renews it; it is not another request in flight.
if cap >= 0 and not redis.call('ZSCORE', leases, ARGV[1])
    and redis.call('ZCARD', leases) >= cap then
  return 0
end
redis.call('ZADD', leases, ARGV[3], ARGV[1])
-- The set lives as long as its longest lease, so a crashed instance's leases leave nothing behind.
local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(latest[2]) - tonumber(ARGV[2]))
if ttl < 1 then
  ttl = 1
end
redis.call('PEXPIRE', leases, string.format('%d', ttl))
return 1
