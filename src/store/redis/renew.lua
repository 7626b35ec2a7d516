-- Renews the leases of a request still in progress (a stream that runs longer than their ttl):
-- each one still in its set and live is given a later deadline. A lease given back is not in its
-- set any more, and one past its deadline is left to the next sweep (its holds and its count go
-- back then): neither is brought back. The members, their holds and the counters in the hash
-- stay as they are; only the deadlines (the scores) move, and only later. The sweep fields
-- (`kl:sweep`, `al:sweep`) may then be earlier than the earliest deadline: a sweep that finds
-- nothing expired sets them anew, as after any give-back.
--
-- Written without live.lua's helpers: it needs none, and the smaller script is cheaper to run.
--
-- KEYS[1..3] as live.lua.
-- ARGV[1] the key lease's member in the key lease set (lp(key) lp(lease) 'bucket=reserve;'...,
-- exactly as take.lua wrote it) or '' for none, ARGV[2] now (unix ms, the admission clock),
-- ARGV[3] its new deadline; ARGV[4] the account lease's member (lp(account) lp(lease)) or '',
-- ARGV[5] now (unix ms, the pick's clock), ARGV[6] its new deadline.
-- Returns {key lease renewed (0/1), account lease renewed (0/1)}.

local function renew(set, member, now, deadline)
  if member == '' then
    return 0
  end
  local score = redis.call('ZSCORE', set, member)
  if not score or tonumber(score) <= tonumber(now) then
    return 0
  end
  if tonumber(deadline) > tonumber(score) then
    redis.call('ZADD', set, 'XX', deadline, member)
  end
  return 1
end

return { renew(KEYS[2], ARGV[1], ARGV[2], ARGV[3]), renew(KEYS[3], ARGV[4], ARGV[5], ARGV[6]) }
