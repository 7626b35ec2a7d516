-- Takes what one request needs before its upstream call, atomically and all or nothing: the
-- key's admission (activation on first use, the concurrency cap, a reservation on every meter)
-- and/or an account chosen by scheduler::policy::choose, with its lease, its place in the pick
-- order and the session's binding.
--
-- The choice mirrors src/scheduler/policy.rs (Health::status_at, can_serve, recovers_at,
-- Contender::load, choose) line for line; a change there must be made here too (the
-- conformance suite runs the same cases on both stores).
--
-- Written to allocate little: every string and table a call makes is garbage that Redis's Lua
-- must collect, and that collection (which walks every loaded script) is most of what a script
-- costs. So the caller builds the names it can (field prefixes, lease members, the registry as
-- this admission would write it), arguments are read where they lie in ARGV instead of being
-- copied into tables, and values are taken from the HMGET reply by position.
--
-- KEYS[1..3] as live.lua; KEYS[4] <p>{live}:sess:<session> (only read with a session): the bound
-- account id, then '\n' and the unix ms it was last written.
-- ARGV[1] '<p>{live}:swept:', then the admission: '0' none, or '1', the key's field prefix
-- ('k' lp(key)), its lease's member in the key lease set (lp(key) lp(lease) 'bucket=reserve;'...),
-- now (unix ms, the admission clock), deadline, cap or -1, validity after first use (ms) or -1,
-- the meter registry as this admission writes it when it holds exactly its meters (sorted
-- 'bucket=expires_at;'...), meter count, and per meter: bucket, limit, reserve, expires_at or -1;
-- then the pick: '0' none, or '1', lp(lease), clock (unix ms: lease liveness and deadline,
-- `last`), deadline, now (unix ms: health is judged at this time), family or '', session mode
-- ('0' none, '1' escape on overflow, '2' move on overflow, '3' never write the binding, only read
-- it, and wait for its account on overflow: policy::Overflow::Wait), session TTL (ms; '0' drops the
-- binding instead of setting it), candidate count, and per candidate: id, field prefix
-- ('a' lp(id)), priority, cap or -1 (none) or -2 (it does not serve the request's model: no
-- capacity, and a session bound to it escapes whatever the policy), weight.
--
-- Returns {1} at the key's concurrency cap, {2, meter (0-based), used, held} a meter is full,
-- {3, first use} the key's validity since its first use has run out, {4} the call ran before
-- (its lease is there already: nothing is counted twice, and the caller gives back what the first
-- run took, as after any failed call); else {0} without a pick,
-- {0, 1, index of the chosen candidate (1-based), sticky, degraded} where sticky is 0 None,
-- 1 Hit, 2 Bound, 3 Escaped, 4 Moved, or {0, 0, retry_at} when no candidate can serve (retry_at:
-- unix ms as a decimal string, '' when none recovers on its own). Nothing is written unless the
-- whole call succeeds: a refused admission or an unavailable pick leaves no lease.

-- Where each part's arguments start in ARGV (0: absent).
local A, M, P, C = 0, 0, 0, 0
local meters, n = 0, 0
if ARGV[2] == '1' then
  A = 3
  meters = tonumber(ARGV[A + 7])
  M = A + 8
  P = M + 4 * meters
else
  P = 3
end
if ARGV[P] == '1' then
  n = tonumber(ARGV[P + 8])
  C = P + 9
else
  P = 0
end
-- Per meter i: bucket M+4(i-1), limit +1, reserve +2, expires +3. Per candidate i: id
-- C+5(i-1), prefix +1, priority +2, cap +3, weight +4.

-- One HMGET of everything this call decides on, in this order: seq, kl:sweep, al:sweep; the
-- key's n, first, b, then per meter u, h; then per candidate n, seq, last, h.
local fields = { 'seq', 'kl:sweep', 'al:sweep' }
local KV, CV = 0, 0 -- where the key's and the candidates' values start in the reply
if A > 0 then
  local kp = ARGV[A]
  KV = 4
  fields[4], fields[5], fields[6] = kp .. 'n', kp .. 'first', kp .. 'b'
  for i = 0, meters - 1 do
    local bucket = ARGV[M + 4 * i]
    fields[7 + 2 * i], fields[8 + 2 * i] = kp .. 'u:' .. bucket, kp .. 'h:' .. bucket
  end
end
if P > 0 then
  CV = #fields + 1
  for i = 0, n - 1 do
    local ap, at = ARGV[C + 5 * i + 1], CV + 4 * i
    fields[at], fields[at + 1], fields[at + 2], fields[at + 3] =
        ap .. 'n', ap .. 'seq', ap .. 'last', ap .. 'h'
  end
end
local v = redis.call('HMGET', STATE, unpack(fields))
local swept = false
if A > 0 and due(v[2], tonumber(ARGV[A + 2])) then
  sweep_keys(tonumber(ARGV[A + 2]))
  swept = true
end
if P > 0 and due(v[3], tonumber(ARGV[P + 2])) then
  sweep_accounts(tonumber(ARGV[P + 2]))
  swept = true
end
if swept then
  v = redis.call('HMGET', STATE, unpack(fields))
end

-- HSET's arguments, field then value.
local hset = {}
local function set(field, value)
  hset[#hset + 1] = field
  hset[#hset + 1] = value
end

-- The admission.
if A > 0 then
  local kp, now = ARGV[A], tonumber(ARGV[A + 2])
  local valid = tonumber(ARGV[A + 5])
  if valid >= 0 then
    local first = v[KV + 1]
    if not first then
      set(fields[KV + 1], ARGV[A + 2])
    elseif tonumber(first) + valid <= now then
      return { 3, first }
    end
  end
  local inflight = tonumber(v[KV] or '0')
  local cap = tonumber(ARGV[A + 4])
  -- A refusal checks for a replay (see commit()) first: a replay is refused by its own first
  -- run's count, and the caller gives back nothing after a refusal. Only refusals pay for it.
  local function refuse(answer)
    if redis.call('ZSCORE', KL, ARGV[A + 1]) then
      return { 4 }
    end
    return answer
  end
  if cap >= 0 and inflight >= cap then
    return refuse({ 1 })
  end
  -- Whether every meter's period is still running (then none of them can be stale).
  local current = true
  for i = 0, meters - 1 do
    local m = M + 4 * i
    local used = tonumber(v[KV + 3 + 2 * i] or '0')
    local held = tonumber(v[KV + 4 + 2 * i] or '0')
    local limit = tonumber(ARGV[m + 1])
    if not (used + held + tonumber(ARGV[m + 2]) <= limit or (held == 0 and used < limit)) then
      return refuse({ 2, i, int(used), int(held) })
    end
    local expires = tonumber(ARGV[m + 3])
    if expires >= 0 and expires <= now then
      current = false
    end
  end
  local old = v[KV + 2]
  -- The meters' registry: this admission's buckets (their expiry renewed), the others dropped
  -- once their period is over, with their fields. Most admissions find it exactly as this one
  -- would write it, and then nothing about it changes.
  if not (current and old == ARGV[A + 6]) then
    local reg = registry(old)
    local stale = {}
    for bucket, expires in pairs(reg) do
      if expires >= 0 and expires <= now then
        reg[bucket] = nil
        stale[#stale + 1] = kp .. 'u:' .. bucket
        stale[#stale + 1] = kp .. 'h:' .. bucket
      end
    end
    local changed = #stale > 0
    for i = 0, meters - 1 do
      local m = M + 4 * i
      local expires = tonumber(ARGV[m + 3])
      if reg[ARGV[m]] ~= expires then
        reg[ARGV[m]] = expires
        changed = true
      end
    end
    if changed then
      local new = registry_string(reg)
      if new ~= (old or '') then
        set(fields[KV + 2], new)
      end
    end
    if #stale > 0 then
      redis.call('HDEL', STATE, unpack(stale))
    end
  end
  for i = 0, meters - 1 do
    set(fields[KV + 4 + 2 * i], int(tonumber(v[KV + 4 + 2 * i] or '0') + tonumber(ARGV[M + 4 * i + 2])))
  end
  set(fields[KV], int(inflight + 1))
  if v[2] == false or v[2] == '' or tonumber(ARGV[A + 3]) < tonumber(v[2]) then
    set('kl:sweep', ARGV[A + 3])
  end
end

-- Writes what the call counted, with its leases (`account`: the chosen account's lease member,
-- nil without a pick); false, writing nothing, when this call's lease is in its set already: the
-- call ran before (fred sends a call again when its reply was lost, and the first run took
-- effect), and counting it again would hold a slot and a reservation that no give-back returns
-- (the set has one member for both runs). The key's lease tells for an admission (both leases
-- were written together); a pick without one has only the account's lease to tell, and that one
-- only when the replay chose the same account.
local function commit(account)
  if A > 0 and redis.call('ZADD', KL, 'NX', ARGV[A + 3], ARGV[A + 1]) == 0 then
    return false
  end
  if account and redis.call('ZADD', AL, 'NX', ARGV[P + 3], account) == 0 and A == 0 then
    return false
  end
  if #hset > 0 then
    redis.call('HSET', STATE, unpack(hset))
  end
  return true
end

if P == 0 then
  if not commit(nil) then
    return { 4 }
  end
  return { 0 }
end

-- The pick.
local now = tonumber(ARGV[P + 4])
local family = ARGV[P + 5]
if family == '' then
  family = nil
end
local session = ARGV[P + 6]
local has_session = session ~= '0'

-- A pick without an admission (a failover attempt, an image request) can tell a replay only by
-- its account lease, and a replay seldom picks the account its first run did (that run raised
-- its load and its pick order): this call's lease is looked for on every candidate first, one
-- ZSCORE each, and found, the call ran before ({4}: the caller gives back what it took).
if A == 0 then
  for i = 1, n do
    if redis.call('ZSCORE', AL, string.sub(ARGV[C + 5 * (i - 1) + 1], 2) .. ARGV[P + 1]) then
      return { 4 }
    end
  end
end

-- Answers that nothing can serve ({0, 0, retry_at}), unless the call ran before: then {4}, as
-- commit() would. A replay with an admission can find no account by its own first run's count
-- (its account at its cap), and the caller gives back nothing after "unavailable": the first
-- run's leases would stay held until their deadline. So an unavailable answer looks for the key
-- lease first (one ZSCORE), and only an unavailable answer pays.
local function unavailable(retry_at)
  if A > 0 and redis.call('ZSCORE', KL, ARGV[A + 1]) then
    return { 4 }
  end
  return { 0, 0, retry_at }
end

local function number(x)
  if type(x) == 'number' then
    return x
  end
  return 0
end

-- The stored health: nil when clean; a table decoded from JSON; false when unreadable (such an
-- account is kept out of rotation, like an unauthorized one, until a report or reset rewrites it).
local function health_of(json)
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

-- Until when a spent budget keeps the account out (unix ms; 0 none).
local function budget_until(h)
  if not h then
    return 0
  end
  return number(h['budget_until'])
end

-- Health::can_serve
local function can_serve(h)
  if status_at(h) ~= 'ok' then
    return false
  end
  local u = family_until(h)
  return (u == nil or u <= now) and budget_until(h) <= now
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
    general = f
  end
  local b = budget_until(h)
  if b > general then
    return b
  end
  return general
end

-- Health::is_clean_for(family): nothing in force for this request's family and no failure streak
-- (the last error is history and does not count), so a success would change nothing and is not
-- reported.
local function is_clean(h)
  if h == nil then
    return true
  end
  if h == false then
    return false
  end
  local limits = h['family_until']
  return h['status'] == 'ok' and number(h['until']) == 0
      and (family == nil or type(limits) ~= 'table' or limits[family] == nil)
      and number(h['consecutive_failures']) == 0
end

-- Candidate i as the policy sees it: in flight, Contender::load (in flight relative to cap x
-- weight, no cap counting as 1000, in millionths), its pick order, and whether it is eligible.
local function contender(i)
  local c, at = C + 5 * (i - 1), CV + 4 * (i - 1)
  local live = tonumber(v[at] or '0')
  local cap = tonumber(ARGV[c + 3])
  local capacity = cap
  if capacity < 0 then
    capacity = 1000
  elseif capacity < 1 then
    capacity = 1
  end
  local weight = tonumber(ARGV[c + 4])
  if weight < 1 then
    weight = 1
  end
  local load = math.floor(live * 1000000 / (capacity * weight))
  local eligible = (cap == -1 or (cap >= 0 and live < cap)) and can_serve(health_of(v[at + 3]))
  return eligible, live, load, tonumber(v[at + 1] or '0')
end

-- Candidate i does not serve the request's model (cap -2: kept for a session bound to it).
local function not_serving(i)
  return ARGV[C + 5 * (i - 1) + 3] == '-2'
end

-- Candidate i never frees up for this request: tried by it (cap 0), or not serving its model.
local function no_capacity(i)
  return ARGV[C + 5 * (i - 1) + 3] == '0' or not_serving(i)
end

-- choose: the session's bound account first, if it can serve.
local bound, bound_at = false, 0
if has_session then
  local binding = redis.call('GET', KEYS[4])
  if binding then
    local nl = string.find(binding, '\n', 1, true)
    if nl then
      bound, bound_at = string.sub(binding, 1, nl - 1), tonumber(string.sub(binding, nl + 1)) or 0
    else
      bound = binding
    end
  end
end
local chosen, sticky, live = nil, nil, 0
local bound_i = nil -- the bound account's index among the candidates, if it is one
if bound then
  for i = 1, n do
    if ARGV[C + 5 * (i - 1)] == bound then
      bound_i = i
      local eligible, l = contender(i)
      if eligible then
        chosen, sticky, live = i, 1, l
        break
      end
    end
  end
end
-- Overflow::Wait: what the request names lives on the bound account only; unless this request
-- tried it (cap 0: the caller answers with that failure) or it never comes back on its own (then
-- it escapes), the answer is its recovery.
if not chosen and session == '3' and bound_i then
  if no_capacity(bound_i) then
    return unavailable('')
  end
  local r = recovers_at(health_of(v[CV + 4 * (bound_i - 1) + 3]))
  if r ~= nil then
    if r <= now then
      r = now + 1000
    end
    return unavailable(string.format('%.0f', r))
  end
end
if not chosen then
  -- Then the lowest (priority, load, seq); strictly lower only, so that among equals the
  -- caller's order decides.
  local best_priority, best_load, best_seq
  for i = 1, n do
    local eligible, l, load, seq = contender(i)
    if eligible then
      local priority = tonumber(ARGV[C + 5 * (i - 1) + 2])
      if not chosen or priority < best_priority
          or (priority == best_priority and (load < best_load
            or (load == best_load and seq < best_seq))) then
        chosen, live, best_priority, best_load, best_seq = i, l, priority, load, seq
      end
    end
  end
  if not chosen then
    -- Nothing can serve: the earliest recovery; a healthy but full account frees up soon. A
    -- candidate without capacity (cap 0: tried by this request; -2: kept only for a session
    -- bound to it) never frees up for it.
    local retry_at = nil
    for i = 1, n do
      local r = nil
      if not no_capacity(i) then
        r = recovers_at(health_of(v[CV + 4 * (i - 1) + 3]))
      end
      if r ~= nil then
        if r <= now then
          r = now + 1000
        end
        if retry_at == nil or r < retry_at then
          retry_at = r
        end
      end
    end
    if retry_at == nil then
      return unavailable('')
    end
    return unavailable(string.format('%.0f', retry_at))
  end
  if not has_session then
    sticky = 0
  elseif not bound then
    sticky = 2
  elseif session == '2' and not (bound_i and not_serving(bound_i)) then
    sticky = 4
  elseif bound_i then
    sticky = 3
  else
    sticky = 2
  end
end

-- Take the lease, record the pick.
local id, ap, at = ARGV[C + 5 * (chosen - 1)], ARGV[C + 5 * (chosen - 1) + 1], CV + 4 * (chosen - 1)
local clock = tonumber(ARGV[P + 2])
local next_seq = int(tonumber(v[1] or '0') + 1)
set('seq', next_seq)
set(fields[at + 1], next_seq)
set(fields[at], int(live + 1))
-- Informational only (the order comes from seq): a wall-clock time that never goes back.
if clock > tonumber(v[at + 2] or '0') then
  set(fields[at + 2], ARGV[P + 2])
end
if v[3] == false or v[3] == '' or tonumber(ARGV[P + 3]) < tonumber(v[3]) then
  set('al:sweep', ARGV[P + 3])
end
-- The account lease's member, lp(account) lp(lease): the prefix without its 'a'.
if not commit(string.sub(ap, 2) .. ARGV[P + 1]) then
  return { 4 }
end

-- The binding: set (Bound, Moved) or renewed (Hit: once an eighth of its TTL has passed, so that
-- a busy session does not rewrite it on every request); an escape leaves it where it is, and
-- mode '3' only reads it.
if (sticky == 1 or sticky == 2 or sticky == 4) and session ~= '3' then
  local ttl = ARGV[P + 7]
  if ttl == '0' then
    redis.call('DEL', KEYS[4])
  elseif sticky ~= 1 or clock - bound_at >= tonumber(ttl) / 8 then
    redis.call('SET', KEYS[4], id .. '\n' .. ARGV[P + 2], 'PX', ttl)
  end
end

local degraded = 0
if not is_clean(health_of(v[at + 3])) then
  degraded = 1
end
return { 0, 1, chosen, sticky, degraded }
