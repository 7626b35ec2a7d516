-- Appends request log entries, at most once per batch id, and trims the log to its bound.
-- KEYS[1]    <p>{log}:applied:<writer>  string: batch ids this writer applied, newest first
-- KEYS[2]    <p>{log}:all               sorted set: '<at>:<request id>' -> at
-- KEYS[3]    <p>{log}:entries           hash: '<at>:<request id>' -> JSON entry
-- KEYS[3+i]  <p>{log}:key:<key id>      sorted set like KEYS[2], entry i's key only
-- ARGV[1] batch id, ARGV[2] marker TTL (ms), ARGV[3] how many batch ids the marker keeps,
-- ARGV[4] the most entries kept, ARGV[5] '<p>{log}:key:' (to name a trimmed entry's key index),
-- then per entry i: at, member, JSON.
-- Ordered like the embedded store: by arrival (at), then request id. Entries with equal `at`
-- share the member prefix '<at>:', so Redis's order among equal scores is the request id's.
-- Returns 1 when applied, 0 when this batch was applied before (a retry).
local marker = KEYS[1]
local seen = redis.call('GET', marker)
local ids = { ARGV[1] }
if seen then
  for id in string.gmatch(seen, '[^,]+') do
    if id == ARGV[1] then
      redis.call('PEXPIRE', marker, ARGV[2])
      return 0
    end
    if #ids < tonumber(ARGV[3]) then
      ids[#ids + 1] = id
    end
  end
end
local all, entries = KEYS[2], KEYS[3]
for i = 1, #KEYS - 3 do
  local at, member, json = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  redis.call('ZADD', all, at, member)
  redis.call('HSET', entries, member, json)
  redis.call('ZADD', KEYS[3 + i], at, member)
end
local excess = redis.call('ZCARD', all) - tonumber(ARGV[4])
if excess > 0 then
  local oldest = redis.call('ZRANGE', all, 0, excess - 1)
  for _, member in ipairs(oldest) do
    local json = redis.call('HGET', entries, member)
    if json then
      local ok, entry = pcall(cjson.decode, json)
      if ok and type(entry) == 'table' and type(entry.key_id) == 'string' then
        redis.call('ZREM', ARGV[5] .. entry.key_id, member)
      end
      redis.call('HDEL', entries, member)
    end
  end
  redis.call('ZREMRANGEBYRANK', all, 0, excess - 1)
end
redis.call('SET', marker, table.concat(ids, ','), 'PX', ARGV[2])
return 1
