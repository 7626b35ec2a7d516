-- Appends request log entries, at most once per batch id, and trims the log to its bound: a
-- handful of commands per call, whatever the number of entries.
-- KEYS[1]    <p>{log}:applied:<writer>  string: batch ids this writer applied, newest first
-- KEYS[2]    <p>{log}:all               sorted set: '<at>:<request id>[\x1f<account id>]\n<key id>' -> at
-- KEYS[3]    <p>{log}:entries           hash: member -> JSON entry
-- ARGV[1] batch id, ARGV[2] marker TTL (ms), ARGV[3] how many batch ids the marker keeps,
-- ARGV[4] the most entries kept, ARGV[5] '<p>{log}:key:' (each key's own index, a sorted set
-- like KEYS[2], is ARGV[5] .. key id), then per entry: at, member, key id, JSON.
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

-- Appends values to the list of `key` in `lists` (created on first use).
local function push(lists, key, ...)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
  end
  for _, v in ipairs({ ... }) do
    list[#list + 1] = v
  end
end

-- Runs `command key args...` in slices, within what unpack takes at once.
local function sliced(command, key, args, step)
  for i = 1, #args, step do
    redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

local all, entries, by_key_prefix = KEYS[2], KEYS[3], ARGV[5]
local scored, stored, by_key = {}, {}, {}
for i = 6, #ARGV, 4 do
  local at, member, key, json = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  scored[#scored + 1] = at
  scored[#scored + 1] = member
  stored[#stored + 1] = member
  stored[#stored + 1] = json
  push(by_key, key, at, member)
end
sliced('ZADD', all, scored, 2000)
sliced('HSET', entries, stored, 2000)
for key, list in pairs(by_key) do
  sliced('ZADD', by_key_prefix .. key, list, 2000)
end

local excess = redis.call('ZCARD', all) - tonumber(ARGV[4])
if excess > 0 then
  local oldest = redis.call('ZRANGE', all, 0, excess - 1)
  -- A member names its key after its first line break (its account, for `log_read.lua`, ends
  -- its first line).
  local gone = {}
  for _, member in ipairs(oldest) do
    local nl = string.find(member, '\n', 1, true)
    if nl then
      push(gone, string.sub(member, nl + 1), member)
    end
  end
  for key, list in pairs(gone) do
    sliced('ZREM', by_key_prefix .. key, list, 1000)
  end
  sliced('HDEL', entries, oldest, 1000)
  redis.call('ZREMRANGEBYRANK', all, 0, excess - 1)
end
redis.call('SET', marker, table.concat(ids, ','), 'PX', ARGV[2])
return 1
