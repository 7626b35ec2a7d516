-- Reads what the scheduling policy needs of every candidate; the choice is made in Rust
-- (scheduler::policy::choose) and committed by pick_commit.lua.
-- KEYS[3i-2..3i] <p>{acct}:leases:<id>, <p>{acct}:rt:<id>, <p>{acct}:health:<id> per candidate;
-- KEYS[#KEYS] the session binding <p>{acct}:sess:<session> when ARGV[2] == '1'.
-- ARGV[1] now (unix ms), ARGV[2] '1' when the last key is a session binding.
-- Returns { live leases, pick seq, health JSON or '' } per candidate, then the bound account or ''.
local now = ARGV[1]
local n = #KEYS
if ARGV[2] == '1' then
  n = n - 1
end
local out = {}
for i = 1, n, 3 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
  out[#out + 1] = redis.call('HGET', KEYS[i + 1], 'seq') or '0'
  out[#out + 1] = redis.call('GET', KEYS[i + 2]) or ''
end
if ARGV[2] == '1' then
  out[#out + 1] = redis.call('GET', KEYS[#KEYS]) or ''
end
return out
