-- Picks one account among the candidates, takes a lease on it and marks it used.
-- Policy (as the embedded store): lowest priority, then lowest pick sequence number (never picked
-- = 0 first), then the caller's order; an account whose live leases reach its cap is skipped.
-- KEYS[1]       <p>{acct}:seq               counter of picks
-- KEYS[2i]      <p>{acct}:leases:<id i>     sorted set: lease id -> deadline (unix ms)
-- KEYS[2i+1]    <p>{acct}:rt:<id i>         hash: seq, last
-- ARGV[1] lease id, ARGV[2] now (unix ms), ARGV[3] deadline (unix ms), ARGV[4] runtime TTL (ms)
-- ARGV[3+2i] priority of candidate i, ARGV[4+2i] its cap or -1 (none)
-- Returns the 1-based index of the chosen candidate, 0 when every one is full.
local now = ARGV[2]
local n = (#KEYS - 1) / 2
local best, best_priority, best_seq
for i = 1, n do
  local leases, runtime = KEYS[2 * i], KEYS[2 * i + 1]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local cap = tonumber(ARGV[4 + 2 * i])
  if cap < 0 or redis.call('ZCARD', leases) < cap then
    local priority = tonumber(ARGV[3 + 2 * i])
    local seq = tonumber(redis.call('HGET', runtime, 'seq') or '0')
    -- Strictly better only, so that among equals the caller's order decides.
    if not best or priority < best_priority or (priority == best_priority and seq < best_seq) then
      best, best_priority, best_seq = i, priority, seq
    end
  end
end
if not best then
  return 0
end
local seq = redis.call('INCR', KEYS[1])
local leases, runtime = KEYS[2 * best], KEYS[2 * best + 1]
redis.call('ZADD', leases, ARGV[3], ARGV[1])
local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(latest[2]) - tonumber(now))
if ttl < 1 then
  ttl = 1
end
redis.call('PEXPIRE', leases, string.format('%d', ttl))
-- Informational only (the order comes from seq): a wall-clock time that never goes back.
local last = tonumber(redis.call('HGET', runtime, 'last') or '0')
if tonumber(now) > last then
  last = tonumber(now)
end
redis.call('HSET', runtime, 'seq', string.format('%d', seq), 'last', string.format('%d', last))
redis.call('PEXPIRE', runtime, ARGV[4])
return best
