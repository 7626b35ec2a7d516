-- Shares an imported price file with every instance.
-- KEYS[1] <p>{rec}:prices  string: the LiteLLM JSON file as imported
-- ARGV[1] change channel, ARGV[2] the file
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[1], 'prices')
return 1
