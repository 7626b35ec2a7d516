-- Gives up a claim (`Store::unclaim`): deletes it only while its owner still holds it.
-- KEYS[1] <p>{rec}:claim:<name>
-- ARGV[1] the owner
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
