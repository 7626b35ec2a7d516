-- Chooses one account by scheduler::policy::choose, takes a lease on it, marks it picked and
-- creates, renews or keeps the session's binding: the whole pick, atomically, in one call.
-- This mirrors src/scheduler/policy.rs (Health::status_at, can_serve, recovers_at, Contender::load,
-- choose) line for line; a change there must be made here too (the conformance suite runs the
-- same cases on both stores).
--
-- KEYS[1]        <p>{acct}:seq               counter of picks
-- KEYS[3i-1]     <p>{acct}:leases:<id i>     sorted set: lease id -> deadline (unix ms)
-- KEYS[3i]       <p>{acct}:rt:<id i>         hash: seq, last
-- KEYS[3i+1]     <p>{acct}:health:<id i>     string: JSON Health, absent when clean
-- KEYS[#KEYS]    <p>{acct}:sess:<session>    string: bound account id (only with a session)
-- ARGV[1] lease id, ARGV[2] clock (unix ms: lease liveness, the deadline's base, `last`),
-- ARGV[3] lease deadline (unix ms), ARGV[4] runtime TTL (ms),
-- ARGV[5] now (unix ms, the request's: health is judged at this time),
-- ARGV[6] '1' when ARGV[7] is the requested model family, '0' when there is none,
-- ARGV[8] session: '0' none, '1' escape on overflow, '2' move on overflow,
-- ARGV[9] session binding TTL (ms; '0' drops the binding instead of setting it),
-- then per candidate i: ARGV[6+4i] id, ARGV[7+4i] priority, ARGV[8+4i] cap or -1 (none),
-- ARGV[9+4i] weight.
-- Returns { 1, index of the chosen candidate (1-based), sticky, degraded (0/1) } where sticky is
-- 0 None, 1 Hit, 2 Bound, 3 Escaped, 4 Moved; or { 0, retry_at } when no candidate can serve,
-- retry_at being unix ms as a decimal string, or '' when none recovers on its own.
--
-- Numbers: Lua's are doubles. Times, caps, weights and counts are far below 2^53; the load is
-- in_flight * 10^6 (< 2^53) divided by capacity, floored, which is exact integer division.
local clock = ARGV[2]
local now = tonumber(ARGV[5])
local family = nil
if ARGV[6] == '1' then
  family = ARGV[7]
end
local session = ARGV[8]
local has_session = session ~= '0'
local n = #KEYS - 1
if has_session then
  n = n - 1
end
n = n / 3

local function number(v)
  if type(v) == 'number' then
    return v
  end
  return 0
end

-- The stored health: nil when clean; a table decoded from JSON; false when unreadable (such an
-- account is kept out of rotation, like an unauthorized one, until a report or reset rewrites it).
local function health_at(key)
  local json = redis.call('GET', key)
  if not json or json == '' then
    return nil
  end
  local ok, h = pcall(cjson.decode, json)
  if not ok or type(h) ~= 'table' then
    return false
  end
  return h
end

-- Health::status_at: 'ok', 'out' (rate limited or cooling down until h.until, still ahead) or
-- 'never' (unauthorized, or a status this script does not know: only a reset brings it back).
local function status_at(h)
  if h == nil then
    return 'ok'
  end
  if h == false then
    return 'never'
  end
  local s = h['status']
  if s == 'ok' then
    return 'ok'
  end
  if s == 'rate_limited' or s == 'cooling_down' then
    if number(h['until']) <= now then
      return 'ok'
    end
    return 'out'
  end
  return 'never'
end

-- The family's own limit (unix ms), or nil.
local function family_until(h)
  if family == nil or not h then
    return nil
  end
  local limits = h['family_until']
  if type(limits) ~= 'table' then
    return nil
  end
  local u = limits[family]
  if type(u) ~= 'number' then
    return nil
  end
  return u
end

-- Health::can_serve
local function can_serve(h)
  if status_at(h) ~= 'ok' then
    return false
  end
  local u = family_until(h)
  return u == nil or u <= now
end

-- Health::recovers_at: when it can serve the family again on its own, nil if never.
local function recovers_at(h)
  local status = status_at(h)
  local general
  if status == 'never' then
    return nil
  elseif status == 'ok' then
    general = now
  else
    general = number(h['until'])
  end
  local f = family_until(h) or now
  if f > general then
    return f
  end
  return general
end

-- Whether the health equals Health::default() (report_health deletes the key then, so a stored
-- value is normally not clean; checked field by field all the same).
local function is_clean(h)
  if h == nil then
    return true
  end
  if h == false then
    return false
  end
  local limits = h['family_until']
  local err = h['last_error']
  return h['status'] == 'ok' and number(h['until']) == 0
      and (limits == nil or (type(limits) == 'table' and next(limits) == nil))
      and number(h['consecutive_failures']) == 0
      and (err == nil or err == cjson.null)
      and number(h['last_error_at']) == 0
end

-- Every candidate as the policy sees it.
local ids, priority, cap, load, seq, health, eligible = {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local a = 6 + 4 * i
  ids[i] = ARGV[a]
  priority[i] = tonumber(ARGV[a + 1])
  cap[i] = tonumber(ARGV[a + 2])
  local weight = tonumber(ARGV[a + 3])
  if weight < 1 then
    weight = 1
  end
  local live = redis.call('ZCOUNT', KEYS[3 * i - 1], '(' .. clock, '+inf')
  seq[i] = tonumber(redis.call('HGET', KEYS[3 * i], 'seq') or '0')
  health[i] = health_at(KEYS[3 * i + 1])
  -- Contender::load: in flight relative to cap x weight (no cap counts as 1000), in millionths.
  local capacity = cap[i]
  if capacity < 0 then
    capacity = 1000
  elseif capacity < 1 then
    capacity = 1
  end
  load[i] = math.floor(live * 1000000 / (capacity * weight))
  -- Contender::eligible
  eligible[i] = (cap[i] < 0 or live < cap[i]) and can_serve(health[i])
end

-- choose: the session's bound account first, if it can serve.
local bound = false
if has_session then
  bound = redis.call('GET', KEYS[#KEYS])
end
local chosen, sticky = nil, nil
if bound then
  for i = 1, n do
    if ids[i] == bound and eligible[i] then
      chosen, sticky = i, 1
      break
    end
  end
end
if not chosen then
  -- Then the lowest (priority, load, seq); strictly lower only, so that among equals the
  -- caller's order decides.
  for i = 1, n do
    if eligible[i] then
      if not chosen or priority[i] < priority[chosen]
          or (priority[i] == priority[chosen] and (load[i] < load[chosen]
            or (load[i] == load[chosen] and seq[i] < seq[chosen]))) then
        chosen = i
      end
    end
  end
  if not chosen then
    -- Nothing can serve: the earliest recovery; a healthy but full account frees up soon.
    local retry_at = nil
    for i = 1, n do
      local at = recovers_at(health[i])
      if at ~= nil then
        if at <= now then
          at = now + 1000
        end
        if retry_at == nil or at < retry_at then
          retry_at = at
        end
      end
    end
    if retry_at == nil then
      return { 0, '' }
    end
    return { 0, string.format('%.0f', retry_at) }
  end
  if not has_session then
    sticky = 0
  elseif not bound then
    sticky = 2
  elseif session == '2' then
    sticky = 4
  else
    sticky = 2
    for i = 1, n do
      if ids[i] == bound then
        sticky = 3
        break
      end
    end
  end
end

-- Take the lease, record the pick.
local leases, runtime = KEYS[3 * chosen - 1], KEYS[3 * chosen]
redis.call('ZREMRANGEBYSCORE', leases, '-inf', clock)
local next_seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', leases, ARGV[3], ARGV[1])
-- The set lives as long as its longest lease, so a crashed instance's leases leave nothing behind.
local latest = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(latest[2]) - tonumber(clock))
if ttl < 1 then
  ttl = 1
end
redis.call('PEXPIRE', leases, string.format('%d', ttl))
-- Informational only (the order comes from seq): a wall-clock time that never goes back.
local last = tonumber(redis.call('HGET', runtime, 'last') or '0')
if tonumber(clock) > last then
  last = tonumber(clock)
end
redis.call('HSET', runtime, 'seq', string.format('%d', next_seq), 'last', string.format('%d', last))
redis.call('PEXPIRE', runtime, ARGV[4])

-- The binding: set (Bound, Moved) or renewed (Hit); an escape leaves it where it is.
if sticky == 1 or sticky == 2 or sticky == 4 then
  if ARGV[9] == '0' then
    redis.call('DEL', KEYS[#KEYS])
  else
    redis.call('SET', KEYS[#KEYS], ids[chosen], 'PX', ARGV[9])
  end
end

local degraded = 0
if not is_clean(health[chosen]) then
  degraded = 1
end
return { 1, chosen, sticky, degraded }
