-- Claims a name for an owner (`Store::claim`): granted when nobody holds it, or when the owner
-- does already (its claim then lasts the ttl from now).
-- KEYS[1] <p>{rec}:claim:<name>
-- ARGV[1] the owner, ARGV[2] the ttl in ms
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
