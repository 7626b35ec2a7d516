-- Forgets an account's live state (its record was deleted); leases in flight end on their own.
-- KEYS[1..3] as live.lua. ARGV[1] unused, ARGV[2] account id.
local id = ARGV[2]
return redis.call('HDEL', STATE, af(id, 'n'), af(id, 'seq'), af(id, 'last'), af(id, 'h'))
