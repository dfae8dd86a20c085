-- Extends a lease from now, if the caller's token still holds it.
-- KEYS: 1 meta hash, 2 in-flight zset
-- ARGV: 1 id, 2 token, 3 lease (ms)
-- Returns: 1 when renewed, 0 when the lease is no longer the caller's (nothing changed)
expect('hash', 1)
expect('zset', 2)
if not holds(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
