-- Writes an account record.
-- KEYS[1] <p>{rec}:accounts  hash: account id -> JSON record
-- ARGV[1] change channel, ARGV[2] id, ARGV[3] JSON record, ARGV[4] '1' when it must already exist
-- Returns 1 when written, 0 when an update found no record.
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], 'accounts')
return 1
