-- Ends a reap: forgets the dead workers whose jobs were taken back, and releases the
-- reaper lock if this reaper still holds it.
-- KEYS: 1 reaper lock, 2 workers zset, 3 workers' info hash
-- ARGV: 1 this reaper's id, 2.. ids of the dead workers reaped
-- Returns: 1
for i = 2, #ARGV do
  -- A worker that came back meanwhile has heartbeated again: keep it.
  local until_ms = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if until_ms and tonumber(until_ms) <= now_ms() then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
