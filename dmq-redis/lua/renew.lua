-- Extends a lease from now, if the caller's token still holds it.
-- KEYS: 1 meta hash, 2 in-flight zset
-- ARGV: 1 id, 2 token, 3 lease (ms)
-- Returns: 1 when renewed, 0 when the lease is no longer the caller's (nothing changed)
local m = redis.call('HGET', KEYS[1], ARGV[1])
if not m or redis.call('ZSCORE', KEYS[2], ARGV[1]) == false or string.match(m, ':([^:]*)$') ~= ARGV[2] then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[1])
return 1
