-- Writes an account record.
-- KEYS[1] <p>{rec}:accounts  hash: account id -> JSON record
-- ARGV[1] change channel, ARGV[2] id, ARGV[3] JSON record, ARGV[4] '1' when it must already exist
-- ARGV[5] (with ARGV[4] '1') the revision the stored record must be at
--   (`update_account_checked`; the record written carries the next)
-- Returns 1 when written, 0 when an update found no record, or not at that revision.
if ARGV[4] == '1' then
  local current = redis.call('HGET', KEYS[1], ARGV[2])
  if not current then
    return 0
  end
  local revision = cjson.decode(current).revision
  if type(revision) ~= 'number' then
    revision = 0
  end
  if revision ~= tonumber(ARGV[5]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], 'accounts')
return 1
