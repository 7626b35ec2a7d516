-- Takes what one request needs before its upstream call, atomically and all or nothing: the
-- key's admission (activation on first use, the concurrency cap, a reservation on every meter)
-- and/or an account chosen by scheduler::policy::choose, with its lease, its place in the pick
-- order and the session's binding.
--
-- The choice mirrors src/scheduler/policy.rs (Health::status_at, can_serve, recovers_at,
-- Contender::load, choose) line for line; a change there must be made here too (the
-- conformance suite runs the same cases on both stores).
--
-- KEYS[1..3] as live.lua; KEYS[4] <p>{live}:sess:<session> (only read with a session): the bound
-- account id, then '\n' and the unix ms it was last written.
-- ARGV[1] '<p>{live}:swept:', then the admission: '0' none, or '1', key id, lease id, now (unix
-- ms, the admission clock), deadline, cap or -1, validity after first use (ms) or -1, meter
-- count, and per meter: bucket, limit, reserve, expires_at or -1;
-- then the pick: '0' none, or '1', lease id, clock (unix ms: lease liveness and deadline, `last`),
-- deadline, now (unix ms: health is judged at this time), family or '', session mode ('0' none,
-- '1' escape on overflow, '2' move on overflow), session TTL (ms; '0' drops the binding instead
-- of setting it), candidate count, and per candidate: id, priority, cap or -1, weight.
--
-- Returns {1} at the key's concurrency cap, {2, meter (0-based), used, held} a meter is full,
-- {3, first use} the key's validity since its first use has run out; else {0} without a pick,
-- {0, 1, index of the chosen candidate (1-based), sticky, degraded} where sticky is 0 None,
-- 1 Hit, 2 Bound, 3 Escaped, 4 Moved, or {0, 0, retry_at} when no candidate can serve (retry_at:
-- unix ms as a decimal string, '' when none recovers on its own). Nothing is written unless the
-- whole call succeeds: a refused admission or an unavailable pick leaves no lease.

local admission = nil
if arg() == '1' then
  admission = {
    key = arg(), lease = arg(), now = tonumber(arg()), deadline = arg(), cap = tonumber(arg()),
    valid = tonumber(arg()), meters = {},
  }
  for i = 1, tonumber(arg()) do
    admission.meters[i] = { bucket = arg(), limit = tonumber(arg()), reserve = arg(), expires = arg() }
  end
end
local pick = nil
if arg() == '1' then
  pick = {
    lease = arg(), clock = tonumber(arg()), deadline = arg(), now = tonumber(arg()),
    family = arg(), session = arg(), session_ttl = arg(), ids = {}, priority = {}, cap = {},
    weight = {},
  }
  if pick.family == '' then
    pick.family = nil
  end
  for i = 1, tonumber(arg()) do
    pick.ids[i] = arg()
    pick.priority[i] = tonumber(arg())
    pick.cap[i] = tonumber(arg())
    local w = tonumber(arg())
    if w < 1 then
      w = 1
    end
    pick.weight[i] = w
  end
end

-- One read of everything this call decides on; each field's name is built once.
local fields = { 'seq', 'kl:sweep', 'al:sweep' }
local function field(name)
  return listed(fields, name)
end
if admission then
  local key = admission.key
  admission.n, admission.first, admission.b = field(kf(key, 'n')), field(kf(key, 'first')),
      field(kf(key, 'b'))
  for _, m in ipairs(admission.meters) do
    m.u, m.h = field(kf(key, 'u:' .. m.bucket)), field(kf(key, 'h:' .. m.bucket))
  end
end
if pick then
  pick.n, pick.seq, pick.last, pick.h = {}, {}, {}, {}
  for i, id in ipairs(pick.ids) do
    pick.n[i], pick.seq[i] = field(af(id, 'n')), field(af(id, 'seq'))
    pick.last[i], pick.h[i] = field(af(id, 'last')), field(af(id, 'h'))
  end
end
local v = read(fields)
local swept = false
if admission and due(v['kl:sweep'], admission.now) then
  sweep_keys(admission.now)
  swept = true
end
if pick and due(v['al:sweep'], pick.clock) then
  sweep_accounts(pick.clock)
  swept = true
end
if swept then
  v = read(fields)
end

local set = {}

-- The admission.
local member = nil
if admission then
  local key, now = admission.key, admission.now
  if admission.valid >= 0 then
    local first = v[admission.first]
    if not first then
      set[admission.first] = int(now)
    elseif tonumber(first) + admission.valid <= now then
      return { 3, first }
    end
  end
  local n = tonumber(v[admission.n] or '0')
  if admission.cap >= 0 and n >= admission.cap then
    return { 1 }
  end
  for i, m in ipairs(admission.meters) do
    local used = tonumber(v[m.u] or '0')
    local held = tonumber(v[m.h] or '0')
    if not (used + held + tonumber(m.reserve) <= m.limit or (held == 0 and used < m.limit)) then
      return { 2, i - 1, int(used), int(held) }
    end
  end
  -- The meters' registry: this admission's buckets (their expiry renewed), the others dropped
  -- once their period is over, with their fields.
  local old = v[admission.b]
  local reg = registry(old)
  local stale = {}
  for bucket, expires in pairs(reg) do
    if expires >= 0 and expires <= now then
      reg[bucket] = nil
      stale[#stale + 1] = kf(key, 'u:' .. bucket)
      stale[#stale + 1] = kf(key, 'h:' .. bucket)
    end
  end
  -- Rewritten only when it changed: most admissions find their meters registered as they were.
  local changed = #stale > 0
  local holds = {}
  for i, m in ipairs(admission.meters) do
    local expires = tonumber(m.expires)
    if reg[m.bucket] ~= expires then
      reg[m.bucket] = expires
      changed = true
    end
    set[m.h] = int(tonumber(v[m.h] or '0') + tonumber(m.reserve))
    holds[i] = m.bucket .. '=' .. m.reserve .. ';'
  end
  if changed then
    local new = registry_string(reg)
    if new ~= (old or '') then
      set[admission.b] = new
    end
  end
  if #stale > 0 then
    redis.call('HDEL', STATE, unpack(stale))
  end
  set[admission.n] = int(n + 1)
  member = lp(key) .. lp(admission.lease) .. table.concat(holds)
  note_deadline(set, 'kl:sweep', v['kl:sweep'], admission.deadline)
end

local function commit()
  write(set)
  if member then
    redis.call('ZADD', KL, admission.deadline, member)
  end
end

if not pick then
  commit()
  return { 0 }
end

-- The pick.
local now = pick.now
local family = pick.family
local session = pick.session
local has_session = session ~= '0'
local n = #pick.ids

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

-- Whether the health equals Health::default() (a report that makes it clean deletes the field,
-- so a stored value is normally not clean; checked field by field all the same).
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
local ids, priority, cap = pick.ids, pick.priority, pick.cap
local live, load, seq, health, eligible = {}, {}, {}, {}, {}
for i = 1, n do
  live[i] = tonumber(v[pick.n[i]] or '0')
  seq[i] = tonumber(v[pick.seq[i]] or '0')
  health[i] = health_of(v[pick.h[i]])
  -- Contender::load: in flight relative to cap x weight (no cap counts as 1000), in millionths.
  local capacity = cap[i]
  if capacity < 0 then
    capacity = 1000
  elseif capacity < 1 then
    capacity = 1
  end
  load[i] = math.floor(live[i] * 1000000 / (capacity * pick.weight[i]))
  -- Contender::eligible
  eligible[i] = (cap[i] < 0 or live[i] < cap[i]) and can_serve(health[i])
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
      local r = recovers_at(health[i])
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
      return { 0, 0, '' }
    end
    return { 0, 0, string.format('%.0f', retry_at) }
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
local id = ids[chosen]
local next_seq = tonumber(v['seq'] or '0') + 1
set['seq'] = int(next_seq)
set[pick.seq[chosen]] = int(next_seq)
set[pick.n[chosen]] = int(live[chosen] + 1)
-- Informational only (the order comes from seq): a wall-clock time that never goes back.
local last = tonumber(v[pick.last[chosen]] or '0')
if pick.clock > last then
  set[pick.last[chosen]] = int(pick.clock)
end
note_deadline(set, 'al:sweep', v['al:sweep'], pick.deadline)
commit()
redis.call('ZADD', AL, pick.deadline, lp(id) .. lp(pick.lease))

-- The binding: set (Bound, Moved) or renewed (Hit: once an eighth of its TTL has passed, so that
-- a busy session does not rewrite it on every request); an escape leaves it where it is.
if sticky == 1 or sticky == 2 or sticky == 4 then
  if pick.session_ttl == '0' then
    redis.call('DEL', KEYS[4])
  elseif sticky ~= 1 or pick.clock - bound_at >= tonumber(pick.session_ttl) / 8 then
    redis.call('SET', KEYS[4], id .. '\n' .. int(pick.clock), 'PX', pick.session_ttl)
  end
end

local degraded = 0
if not is_clean(health[chosen]) then
  degraded = 1
end
return { 0, 1, chosen, sticky, degraded }
