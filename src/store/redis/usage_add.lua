-- Adds one batch's counters of one dimension, at most once per batch id.
-- KEYS[1]  <p>{u:<dim>}:applied:<writer>  string: batch ids this writer applied here, newest first
-- KEYS[k]  <p>{u:<dim>}:<bucket>          hash: Counters field -> value   (k >= 2)
-- ARGV[1] batch id, ARGV[2] marker TTL (ms), ARGV[3] how many batch ids the marker keeps,
-- then per counter key: its TTL in ms ('0' = none), 9 increments in FIELDS order, and the
-- arrival (unix ms) of the newest request counted, kept in 'last_at' when newer ('0' = none).
-- Returns 1 when applied, 0 when this batch was applied before (a retry).
local FIELDS = {
  'requests', 'input_tokens', 'output_tokens', 'cache_creation_input_tokens',
  'cache_creation_5m_input_tokens', 'cache_creation_1h_input_tokens',
  'cache_read_input_tokens', 'cost_nanousd', 'images',
}
local marker = KEYS[1]
local seen = redis.call('GET', marker)
local ids = { ARGV[1] }
if seen then
  for id in string.gmatch(seen, '[^,]+') do
    if id == ARGV[1] then
      -- Kept alive while a caller keeps retrying a batch that failed elsewhere.
      redis.call('PEXPIRE', marker, ARGV[2])
      return 0
    end
    if #ids < tonumber(ARGV[3]) then
      ids[#ids + 1] = id
    end
  end
end
local a = 4
for k = 2, #KEYS do
  local ttl = ARGV[a]
  a = a + 1
  for f = 1, #FIELDS do
    if ARGV[a] ~= '0' then
      redis.call('HINCRBY', KEYS[k], FIELDS[f], ARGV[a])
    end
    a = a + 1
  end
  local last = ARGV[a]
  a = a + 1
  if last ~= '0' and tonumber(last) > (tonumber(redis.call('HGET', KEYS[k], 'last_at')) or 0) then
    redis.call('HSET', KEYS[k], 'last_at', last)
  end
  if ttl ~= '0' then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
redis.call('SET', marker, table.concat(ids, ','), 'PX', ARGV[2])
return 1
