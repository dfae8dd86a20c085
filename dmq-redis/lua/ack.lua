-- Settles a job as done: forgets it, if the caller's token still holds the lease.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset
-- ARGV: 1 id, 2 token
-- Returns: 1 when acknowledged, 0 when the lease is no longer the caller's (nothing changed)
if not holds(KEYS[2], KEYS[3], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
