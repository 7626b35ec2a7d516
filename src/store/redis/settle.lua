-- Settles one lease of a key: returns what it held, adds what the request used, ends the lease.
-- KEYS[1]    <p>{k:<key id>}:leases          sorted set: lease id -> deadline
-- KEYS[2]    <p>{k:<key id>}:holds           hash: lease id -> what it holds
-- KEYS[3]    <p>{k:<key id>}:settled:<lease> string: present once the lease was settled
-- KEYS[3+i]  <p>{k:<key id>}:m:<bucket>      hash: used, held (meter i)
-- ARGV[1] lease id, ARGV[2] how long the settled mark lives (ms),
-- then ARGV[2+i] the amount meter i used. A meter whose period ended since the admission (its
-- key expired) is not recreated: there is nothing left to count against.
-- Returns 1 when settled, 0 when the lease had been settled before (a retried call).
local leases, holds, mark = KEYS[1], KEYS[2], KEYS[3]
local lease = ARGV[1]
local n = #KEYS - 3
if n > 0 and redis.call('EXISTS', mark) == 1 then
  return 0
end
local held = redis.call('HGET', holds, lease)
if held then
  for key, amount in string.gmatch(held, '([^\t\n]+)\t(%d+)\n') do
    if redis.call('EXISTS', key) == 1 then
      if redis.call('HINCRBY', key, 'held', '-' .. amount) < 0 then
        redis.call('HSET', key, 'held', 0)
      end
    end
  end
  redis.call('HDEL', holds, lease)
end
redis.call('ZREM', leases, lease)
for i = 1, n do
  local key, amount = KEYS[3 + i], ARGV[2 + i]
  if amount ~= '0' and redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'used', amount)
  end
end
if n > 0 then
  redis.call('SET', mark, '1', 'PX', ARGV[2])
end
return 1
