-- Moves a leased job to the queue's capped dead-letter list with a reason, if the
-- caller's token still holds the lease. Entries beyond the cap are dropped and counted.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 dead list, 5 dead payloads hash, 6 dropped counter
-- ARGV: 1 id, 2 token, 3 reason, 4 cap
-- Returns: 1 when dead-lettered, 0 when the lease is no longer the caller's (nothing changed)
-- A dead-list entry is "<Unix ms>|<id>|<reason>"; its payload is in the dead payloads hash.
local m = redis.call('HGET', KEYS[2], ARGV[1])
if not m or redis.call('ZSCORE', KEYS[3], ARGV[1]) == false or string.match(m, ':([^:]*)$') ~= ARGV[2] then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local payload = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[4], now_ms .. '|' .. ARGV[1] .. '|' .. ARGV[3])
redis.call('HSET', KEYS[5], ARGV[1], payload)
local cap = tonumber(ARGV[4])
while redis.call('LLEN', KEYS[4]) > cap do
  local dropped = redis.call('RPOP', KEYS[4])
  local id = string.match(dropped, '^%d+|([^|]*)|')
  if id then redis.call('HDEL', KEYS[5], id) end
  redis.call('INCR', KEYS[6])
end
return 1
