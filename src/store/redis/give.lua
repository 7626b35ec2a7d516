-- Gives back what one request took, atomically: the key's lease (what it held on each meter
-- returns, what the request used is added) and/or the account's lease.
--
-- KEYS[1..3] as live.lua.
-- ARGV[1] '<p>{live}:swept:', then the key's lease: '0' none, or '1', key id, lease id, its holds as admitted
-- ('bucket=reserve;'..., exactly as take.lua wrote them) or '?' when the caller does not know
-- them (the lease is then looked up), the count of used amounts, and per amount: bucket, amount;
-- then the account's lease: '0' none, or '1', account id, lease id.
-- A meter no longer in the key's registry (its period ended and the next admission dropped it) is
-- not recreated. Idempotent: a lease given back twice counts once. A key lease swept after its deadline already
-- returned its holds; its use is still added (once).
-- Returns {key lease given back (0/1), account lease given back (0/1)}.

local key = nil
if arg() == '1' then
  key = { id = arg(), lease = arg(), holds = arg(), used = {} }
  for i = 1, tonumber(arg()) do
    key.used[i] = { arg(), arg() }
  end
end
local account = nil
if arg() == '1' then
  account = { id = arg(), lease = arg() }
end

-- Escapes a string for a MATCH pattern.
local function glob_escape(s)
  return (string.gsub(s, '[%*%?%[%]\\]', '\\%0'))
end

-- The member of a key lease whose holds the caller does not know.
local function find_member(prefix)
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', KL, cursor, 'MATCH', glob_escape(prefix) .. '*', 'COUNT', 1000)
    cursor = page[1]
    -- Length-prefixed ids: every member that starts with the prefix is this lease's.
    if #page[2] > 0 then
      return page[2][1]
    end
  until cursor == '0'
  return nil
end

local key_given, account_given = 0, 0
local holds, add_used = {}, false
if key then
  local prefix = lp(key.id) .. lp(key.lease)
  local member = nil
  if key.holds == '?' then
    member = find_member(prefix)
  else
    member = prefix .. key.holds
  end
  if member and redis.call('ZREM', KL, member) == 1 then
    key_given = 1
    holds = parse_pairs(string.sub(member, #prefix + 1))
    add_used = true
  elseif redis.call('DEL', SWEPT .. prefix) == 1 then
    -- Swept after its deadline: the holds went back then; the use counts now, once.
    add_used = true
  end
end
if account and redis.call('ZREM', AL, lp(account.id) .. lp(account.lease)) == 1 then
  account_given = 1
end
if key_given == 0 and account_given == 0 and not add_used then
  return { 0, 0 }
end

-- Each field's name is built once: p[3] is a hold's or a use's.
local fields = {}
local function field(name)
  return listed(fields, name)
end
if key and (key_given == 1 or add_used) then
  key.n, key.b = field(kf(key.id, 'n')), field(kf(key.id, 'b'))
  for _, p in ipairs(holds) do
    p[3] = field(kf(key.id, 'h:' .. p[1]))
  end
  for _, p in ipairs(key.used) do
    p[3] = field(kf(key.id, 'u:' .. p[1]))
  end
end
if account_given == 1 then
  account.n = field(af(account.id, 'n'))
end
local v = read(fields)
local set = {}
local function add(field, delta)
  local x = tonumber(set[field] or v[field] or '0') + delta
  if x < 0 then
    x = 0
  end
  set[field] = int(x)
end
if key_given == 1 then
  add(key.n, -1)
end
if add_used then
  local reg = registry(v[key.b])
  for _, p in ipairs(holds) do
    if reg[p[1]] ~= nil then
      add(p[3], -tonumber(p[2]))
    end
  end
  for _, p in ipairs(key.used) do
    if p[2] ~= '0' and reg[p[1]] ~= nil then
      add(p[3], tonumber(p[2]))
    end
  end
end
if account_given == 1 then
  add(account.n, -1)
end
write(set)
return { key_given, account_given }
