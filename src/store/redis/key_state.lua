-- Reads a key's live state for the key-info view.
-- KEYS[1] <p>{k:<key id>}:leases, KEYS[2] <p>{k:<key id>}:first, KEYS[2+i] <p>{k:<key id>}:m:<bucket>
-- ARGV[1] now (unix ms)
-- Returns {leases alive, first use or '', used 1, held 1, used 2, held 2, ...}.
local out = {redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf'), redis.call('GET', KEYS[2]) or ''}
for i = 3, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'used', 'held')
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
end
return out
