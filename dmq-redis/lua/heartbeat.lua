-- Registers a worker as alive until ttl from now (Redis's clock), with its description.
-- KEYS: 1 workers zset (id scored by when its heartbeat lapses), 2 workers' info hash
-- ARGV: 1 worker id, 2 ttl (ms), 3 encoded description
-- Returns: when the heartbeat lapses (Unix ms)
local until_ms = now_ms() + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return until_ms
