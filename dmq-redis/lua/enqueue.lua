-- Adds jobs to one queue, atomically: all of them, or none when an id is already there.
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 signal list, 5..14 ready lists (priority 0..9)
-- ARGV: 1 job count n, then per job: id, priority (0-9), due (Unix ms, 0 for now), payload
-- Returns: {"ok"}, or {"duplicate", id} when an id is already queued or repeated (nothing added)
local now_ms = now_ms()
local n = tonumber(ARGV[1])
local seen = {}
for i = 0, n - 1 do
  local id = ARGV[2 + i * 4]
  if seen[id] or redis.call('HEXISTS', KEYS[1], id) == 1 then
    return {'duplicate', id}
  end
  seen[id] = true
end
for i = 0, n - 1 do
  local base = 2 + i * 4
  local id, priority, due, payload = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), ARGV[base + 3]
  redis.call('HSET', KEYS[1], id, payload)
  redis.call('HSET', KEYS[2], id, priority .. ':0:')
  if due > now_ms then
    redis.call('ZADD', KEYS[3], due, id)
  else
    redis.call('RPUSH', KEYS[5 + priority], id)
  end
end
-- One wake-up per job for blocked claimers; capped, since claimers also look on their own.
for i = 1, math.min(n, 64) do
  redis.call('LPUSH', KEYS[4], '1')
end
redis.call('LTRIM', KEYS[4], 0, 255)
return {'ok'}
