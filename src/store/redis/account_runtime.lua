-- Leases in flight, last pick time and health of one account (expired leases swept first).
-- KEYS[1..3] as live.lua. ARGV[1] '<p>{live}:swept:', ARGV[2] now (unix ms), ARGV[3] account id.
-- Returns { leases in flight, last pick (unix ms, '0' if never), health JSON or '' }.
local now, id = tonumber(ARGV[2]), ARGV[3]
if due(redis.call('HGET', STATE, 'al:sweep'), now) then
  sweep_accounts(now)
end
local v = redis.call('HMGET', STATE, af(id, 'n'), af(id, 'last'), af(id, 'h'))
return { tonumber(v[1] or '0'), v[2] or '0', v[3] or '' }
