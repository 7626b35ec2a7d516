-- Admits one request of a key, atomically: activation on first use, the concurrency cap, and a
-- reservation on every limit counter (window, day, week, total, family), all or nothing.
-- KEYS[1]    <p>{k:<key id>}:leases     sorted set: lease id -> deadline (unix ms, the caller's clock)
-- KEYS[2]    <p>{k:<key id>}:holds      hash: lease id -> what it holds ("<meter key>\t<amount>\n"...)
-- KEYS[3]    <p>{k:<key id>}:first      string: unix ms of the key's first use
-- KEYS[3+i]  <p>{k:<key id>}:m:<bucket> hash: used, held (meter i)
-- ARGV[1] lease id, ARGV[2] now (unix ms), ARGV[3] deadline (unix ms), ARGV[4] cap or -1 (none),
-- ARGV[5] validity after the first use (ms) or -1 (no activation on first use),
-- then per meter i: ARGV[3i+3] limit, ARGV[3i+4] reserve, ARGV[3i+5] expires at (unix ms) or -1.
-- Returns {0} granted, {1} at the concurrency cap, {2, i (0-based), used, held} meter i is full,
-- {3, first use} the key's validity since its first use has run out.
--
-- Numbers: amounts are nano-USD, tokens or requests, far below 2^53, so Lua's doubles compare
-- them exactly; additions go through HINCRBY with the decimal strings as given.
local leases, holds, first_key = KEYS[1], KEYS[2], KEYS[3]
local lease, now = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 3

-- Returns what a lease held. A meter whose period ended (key gone) is not recreated.
local function unhold(encoded)
  for key, amount in string.gmatch(encoded, '([^\t\n]+)\t(%d+)\n') do
    if redis.call('EXISTS', key) == 1 then
      if redis.call('HINCRBY', key, 'held', '-' .. amount) < 0 then
        redis.call('HSET', key, 'held', 0)
      end
    end
  end
end

-- Leases of crashed instances: gone, and what they held with them.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, id in ipairs(expired) do
  local held = redis.call('HGET', holds, id)
  if held then
    unhold(held)
    redis.call('HDEL', holds, id)
  end
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
end

local valid = tonumber(ARGV[5])
if valid >= 0 then
  local first = redis.call('GET', first_key)
  if not first then
    redis.call('SET', first_key, ARGV[2])
  elseif tonumber(first) + valid <= now then
    return {3, first}
  end
end

-- Re-admitting a lease already held renews it; it is not another request in flight.
local renewing = redis.call('ZSCORE', leases, lease)
local previous = redis.call('HGET', holds, lease)
if previous then
  unhold(previous)
  redis.call('HDEL', holds, lease)
end
local cap = tonumber(ARGV[4])
if cap >= 0 and not renewing and redis.call('ZCARD', leases) >= cap then
  return {1}
end

for i = 1, n do
  local limit, reserve = tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
  local v = redis.call('HMGET', KEYS[3 + i], 'used', 'held')
  local used, held = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if not (used + held + reserve <= limit or (held == 0 and used < limit)) then
    return {2, i - 1, v[1] or '0', v[2] or '0'}
  end
end

local encoded = {}
for i = 1, n do
  local key, reserve, expires = KEYS[3 + i], ARGV[3 * i + 4], ARGV[3 * i + 5]
  redis.call('HINCRBY', key, 'held', reserve)
  if expires ~= '-1' then
    redis.call('PEXPIREAT', key, expires)
  end
  encoded[i] = key .. '\t' .. reserve .. '\n'
end
redis.call('ZADD', leases, ARGV[3], lease)
if n > 0 then
  redis.call('HSET', holds, lease, table.concat(encoded))
end
-- The lease set and the holds live as long as the longest lease, so a crashed instance's leases
-- leave nothing behind.
local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(latest[2]) - now)
if ttl < 1 then
  ttl = 1
end
redis.call('PEXPIRE', leases, string.format('%d', ttl))
if redis.call('EXISTS', holds) == 1 then
  redis.call('PEXPIRE', holds, string.format('%d', ttl))
end
return {0}
