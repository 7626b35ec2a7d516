-- Deletes an account record (its runtime state lives under another tag; the caller clears it).
-- KEYS[1] <p>{rec}:accounts; ARGV[1] change channel, ARGV[2] id
-- Returns 1 when a record was deleted, 0 when there was none.
local deleted = redis.call('HDEL', KEYS[1], ARGV[2])
if deleted == 1 then
  redis.call('PUBLISH', ARGV[1], 'accounts')
end
return deleted
