-- Gives back what one request took, atomically: the key's lease (what it held on each meter
-- returns, what the request used is added) and/or the account's lease, binding a session to that
-- account when the answer made something only it holds (a stored response).
--
-- Written to allocate little, as take.lua is (see there why): the caller builds the prefixes
-- and members, and arguments are read where they lie in ARGV.
--
-- KEYS[1..3] as live.lua; KEYS[4] <p>{live}:sess:<session> when the account's part binds one.
-- ARGV[1] '<p>{live}:swept:', then the key's lease: '0' none, or '1', the key's field prefix
-- ('k' lp(key)), lp(key) lp(lease), its holds as admitted ('bucket=reserve;'..., exactly as
-- take.lua wrote them) or '?' when the caller does not know them (the lease is then looked up),
-- the count of used amounts, and per amount: bucket, amount; then the account's lease: '0' none,
-- or '1', the account's field prefix ('a' lp(account)), lp(account) lp(lease), and, when it binds
-- a session, the binding's TTL (ms; '0' drops it) and value (as take.lua writes it: the account,
-- '\n', unix ms now).
-- A meter no longer in the key's registry (its period ended and the next admission dropped it) is
-- not recreated. Idempotent: a lease given back twice counts once. A key lease swept after its
-- deadline already returned its holds; its use is still added (once).
-- Returns {key lease given back (0/1), account lease given back (0/1)}.

-- Where each part's arguments start in ARGV (0: absent).
local K, U, AC, used = 0, 0, 0, 0
if ARGV[2] == '1' then
  K = 3
  used = tonumber(ARGV[K + 3])
  U = K + 4
  AC = U + 2 * used
else
  AC = 3
end
if ARGV[AC] ~= '1' then
  AC = 0
end
-- Per used amount i: bucket U+2(i-1), amount +1.

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
local holds, add_used = nil, false
if K > 0 then
  local prefix = ARGV[K + 1]
  local member = nil
  if ARGV[K + 2] == '?' then
    member = find_member(prefix)
  else
    member = prefix .. ARGV[K + 2]
  end
  if member and redis.call('ZREM', KL, member) == 1 then
    key_given = 1
    holds = string.sub(member, #prefix + 1)
    add_used = true
  elseif redis.call('DEL', SWEPT .. prefix) == 1 then
    -- Swept after its deadline: the holds went back then; the use counts now, once.
    add_used = true
  end
end
if AC > 0 and redis.call('ZREM', AL, ARGV[AC + 2]) == 1 then
  account_given = 1
end
-- The binding, whether the lease was still held or not: it says where the answer was made, and
-- setting it again changes nothing.
if AC > 0 and ARGV[AC + 3] then
  if ARGV[AC + 3] == '0' then
    redis.call('DEL', KEYS[4])
  else
    redis.call('SET', KEYS[4], ARGV[AC + 4], 'PX', ARGV[AC + 3])
  end
end
if key_given == 0 and account_given == 0 and not add_used then
  return { 0, 0 }
end

-- One HMGET, in this order: the key's n and b, its holds' fields, its uses' fields; the
-- account's n.
local fields = {}
local hold_bucket, hold_amount = {}, {}
local kp = ARGV[K]
if add_used then
  fields[1], fields[2] = kp .. 'n', kp .. 'b'
  if holds then
    for bucket, amount in string.gmatch(holds, '([^=;]+)=(%-?%d+);') do
      hold_bucket[#hold_bucket + 1], hold_amount[#hold_amount + 1] = bucket, amount
      fields[#fields + 1] = kp .. 'h:' .. bucket
    end
  end
  for i = 0, used - 1 do
    fields[#fields + 1] = kp .. 'u:' .. ARGV[U + 2 * i]
  end
end
if account_given == 1 then
  fields[#fields + 1] = ARGV[AC + 1] .. 'n'
end
local v = redis.call('HMGET', STATE, unpack(fields))

-- Whether a bucket is in a key's meter registry ('bucket=expires_at;'...).
local function registered(reg, bucket)
  if not reg then
    return false
  end
  local entry = bucket .. '='
  local from = 1
  while true do
    local at = string.find(reg, entry, from, true)
    if not at then
      return false
    end
    if at == 1 or string.byte(reg, at - 1) == 59 then -- ';'
      return true
    end
    from = at + 1
  end
end

local set = {}
local function add(i, delta)
  local field = fields[i]
  local x = tonumber(set[field] or v[i] or '0') + delta
  if x < 0 then
    x = 0
  end
  set[field] = int(x)
end
-- Not an in-flight count its key's or account's deletion forgot (key_forget.lua,
-- account_forget.lua): written back as 0, it would outlive them.
if key_given == 1 and v[1] then
  add(1, -1)
end
if add_used then
  local reg = v[2]
  for i = 1, #hold_bucket do
    if registered(reg, hold_bucket[i]) then
      add(2 + i, -tonumber(hold_amount[i]))
    end
  end
  for i = 0, used - 1 do
    local bucket, amount = ARGV[U + 2 * i], ARGV[U + 2 * i + 1]
    if amount ~= '0' and registered(reg, bucket) then
      add(3 + #hold_bucket + i, tonumber(amount))
    end
  end
end
if account_given == 1 and v[#fields] then
  add(#fields, -1)
end
write(set)
return { key_given, account_given }
