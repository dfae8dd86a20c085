-- Removes a worker from the registry, as on a graceful stop.
-- KEYS: 1 workers zset, 2 workers' info hash
-- ARGV: 1 worker id
-- Returns: 1
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
