-- Settles one job as done, as ack.lua does, and records its completion in the same
-- step, for the exactly-once guarantee; completions whose time is up are forgotten.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 completed zset
-- ARGV: 1 id, 2 token, 3 how long to remember the completion (ms)
-- Returns: 1 when completed, 0 when the lease is no longer the caller's (nothing
-- changed, nothing recorded)
local id = ARGV[1]
if not holds(KEYS[2], id, ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), id)
return 1
