-- Counters of each key, in FIELDS order (the same as usage_add.lua) then 'last_at', nil where absent
-- (counters written before a field existed read it as nil: 0).
-- KEYS[k] <p>{u:<dim>}:<bucket>
local out = {}
for k = 1, #KEYS do
  out[k] = redis.call('HMGET', KEYS[k], 'requests', 'input_tokens', 'output_tokens',
    'cache_creation_input_tokens', 'cache_creation_5m_input_tokens',
    'cache_creation_1h_input_tokens', 'cache_read_input_tokens', 'cost_nanousd',
    'images', 'last_at')
end
return out
