-- The live state of keys and accounts, shared by take.lua, give.lua, key_state.lua,
-- account_runtime.lua, health_cas.lua, key_forget.lua and account_forget.lua (this file is
-- prepended to each of them).
--
-- Everything a request touches before and after its upstream call lives under one hash tag, so
-- that one script reads it with one HMGET and writes it with one HSET (docs/redis-keys.md):
--
-- KEYS[1] <p>{live}:state   hash, durable; ids inside field names are length-prefixed (lp), so
--                           that no id can end where another begins:
--   seq                     picks so far (the pick order)
--   kl:sweep / al:sweep     the earliest deadline in the key / account lease set, '' when empty
--   k<lp key>n              the key's leases in flight
--   k<lp key>first          unix ms of its first admission (activation on first use)
--   k<lp key>b              its meters: 'bucket=expires_at;' ... (expires_at -1: never)
--   k<lp key>u:<bucket>     what the key used on a meter
--   k<lp key>h:<bucket>     what its leases in flight hold on a meter
--   a<lp acct>n             the account's leases in flight
--   a<lp acct>seq           the pick that last chose it
--   a<lp acct>last          unix ms of that pick
--   a<lp acct>h             its health (JSON), absent while clean
-- KEYS[2] <p>{live}:kl      sorted set, key leases: lp(key) lp(lease) 'bucket=held;'... -> deadline
--                           (unix ms, the admission's clock)
-- KEYS[3] <p>{live}:al      sorted set, account leases: lp(account) lp(lease) -> deadline (unix
--                           ms, the caller's wall clock)
--
-- The counters in the hash and the members of the lease sets change together, in the same
-- script: a lease in a set is counted in `n` and holds what its member says. (renew.lua moves only
-- the deadline of a live lease, later: it needs none of this file.) A lease that was
-- not given back by its deadline (a crashed instance) is swept by the next script that finds
-- the set's earliest deadline passed; a key lease swept so leaves a mark
-- <p>{live}:swept:<lp key><lp lease> (ARGV[1] is '<p>{live}:swept:') so that its late settle still
-- counts what it used.
--
-- Numbers: amounts are nano-USD, tokens or requests, far below 2^53, so Lua's doubles hold them
-- exactly; they are written back with '%d' (64-bit).
local STATE, KL, AL = KEYS[1], KEYS[2], KEYS[3]
local SWEPT = ARGV[1]
local SWEPT_TTL = 86400000

-- Reads ARGV in order after ARGV[1] (take.lua and give.lua pass structured arguments).
local at = 2
local function arg()
  local v = ARGV[at]
  at = at + 1
  return v
end

local function lp(id)
  return #id .. ':' .. id
end

-- A script names the same key's and accounts' fields many times: each prefix is built once.
local prefixes = {}

-- A field of a key (kind 'k') or an account ('a').
local function named(kind, id, field)
  local slot = kind .. id
  local p = prefixes[slot]
  if not p then
    p = kind .. lp(id)
    prefixes[slot] = p
  end
  return p .. field
end

local function kf(key, field)
  return named('k', key, field)
end

local function af(account, field)
  return named('a', account, field)
end

local function int(v)
  return string.format('%d', v)
end

-- Reads a length-prefixed id at position i of s: the id and the position after it.
local function read_lp(s, i)
  local colon = string.find(s, ':', i, true)
  local len = tonumber(string.sub(s, i, colon - 1))
  return string.sub(s, colon + 1, colon + len), colon + len + 1
end

-- 'bucket=amount;...' -> { {bucket, amount}, ... } in order.
local function parse_pairs(s)
  local out = {}
  if s then
    for bucket, amount in string.gmatch(s, '([^=;]+)=(%-?%d+);') do
      out[#out + 1] = { bucket, amount }
    end
  end
  return out
end

-- A key's meter registry as bucket -> expires_at (number; -1 never).
local function registry(s)
  local out = {}
  for _, p in ipairs(parse_pairs(s)) do
    out[p[1]] = tonumber(p[2])
  end
  return out
end

local function registry_string(reg)
  local parts = {}
  for bucket, expires in pairs(reg) do
    parts[#parts + 1] = bucket .. '=' .. int(expires) .. ';'
  end
  table.sort(parts)
  return table.concat(parts)
end

-- Adds delta to a counter field, never below 0 (a hold returned after its meter was reset).
local function bump(field, delta)
  local v = redis.call('HINCRBY', STATE, field, delta)
  if v < 0 then
    redis.call('HSET', STATE, field, 0)
  end
end

-- The earliest deadline left in a lease set, as the sweep field's value.
local function earliest(set)
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return ''
  end
  return first[2]
end

-- Returns the holds and the in-flight count of key leases whose deadline passed by now (the
-- admission clock), then notes the next deadline. Rare: only after a crash or a stuck request.
local function sweep_keys(now)
  local expired = redis.call('ZRANGEBYSCORE', KL, '-inf', now)
  for _, member in ipairs(expired) do
    local key, i = read_lp(member, 1)
    local lease, j = read_lp(member, i)
    local reg = registry(redis.call('HGET', STATE, kf(key, 'b')))
    for _, p in ipairs(parse_pairs(string.sub(member, j))) do
      if reg[p[1]] ~= nil then
        bump(kf(key, 'h:' .. p[1]), '-' .. p[2])
      end
    end
    bump(kf(key, 'n'), -1)
    redis.call('SET', SWEPT .. lp(key) .. lp(lease), '1', 'PX', SWEPT_TTL)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KL, '-inf', now)
  end
  redis.call('HSET', STATE, 'kl:sweep', earliest(KL))
end

-- As sweep_keys for account leases (the caller's wall clock).
local function sweep_accounts(now)
  local expired = redis.call('ZRANGEBYSCORE', AL, '-inf', now)
  for _, member in ipairs(expired) do
    local account = read_lp(member, 1)
    bump(af(account, 'n'), -1)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', AL, '-inf', now)
  end
  redis.call('HSET', STATE, 'al:sweep', earliest(AL))
end

-- Sweeps a lease set when its earliest deadline passed (`due` is the sweep field as read).
local function due(sweep, now)
  return sweep and sweep ~= '' and tonumber(sweep) <= now
end

-- Appends a field's name to a list for `read` and returns it, so that a script builds each
-- name once and keeps it.
local function listed(fields, name)
  fields[#fields + 1] = name
  return name
end

-- HMGET of a list of fields, as field -> value (nil when absent).
local function read(fields)
  local values = redis.call('HMGET', STATE, unpack(fields))
  local out = {}
  for i, f in ipairs(fields) do
    out[f] = values[i] or nil
  end
  return out
end

-- HSET of a table field -> value (strings), when there is anything to write.
local function write(set)
  local args = {}
  for f, v in pairs(set) do
    args[#args + 1] = f
    args[#args + 1] = v
  end
  if #args > 0 then
    redis.call('HSET', STATE, unpack(args))
  end
end

-- A new lease in a set: the sweep field moves to its deadline if it is the earliest.
local function note_deadline(set_fields, sweep_field, current, deadline)
  if current == nil or current == '' or tonumber(deadline) < tonumber(current) then
    set_fields[sweep_field] = deadline
  end
end
