-- The newest entries of a log index, newest first (false for an entry gone meanwhile).
-- KEYS[1] <p>{log}:all or <p>{log}:key:<key id>, KEYS[2] <p>{log}:entries
-- ARGV[1] the index of the last entry wanted (limit - 1, computed by the caller: no arithmetic on
-- big numbers in Lua)
-- ARGV[2], when given: only the entries of this account (the end of a member's first line,
-- after a unit separator), found a page at a time. The log keeps no index per account: an
-- entry costs every request, a read an admin now and then.
local members
if ARGV[2] then
  local want, from, suffix = tonumber(ARGV[1]) + 1, 0, '\31' .. ARGV[2]
  members = {}
  while #members < want do
    local page = redis.call('ZREVRANGE', KEYS[1], from, from + 999)
    if #page == 0 then
      break
    end
    for _, member in ipairs(page) do
      local nl = string.find(member, '\n', 1, true)
      if nl and nl > #suffix and string.sub(member, nl - #suffix, nl - 1) == suffix then
        members[#members + 1] = member
        if #members == want then
          break
        end
      end
    end
    from = from + 1000
  end
else
  members = redis.call('ZREVRANGE', KEYS[1], 0, ARGV[1])
end
local out = {}
for i = 1, #members, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(members, i, math.min(i + 999, #members)))
  for _, json in ipairs(part) do
    out[#out + 1] = json
  end
end
return out
