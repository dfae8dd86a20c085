-- Claims up to N due jobs from one queue, highest priority first, each under a lease
-- with a fresh token. First moves due delayed jobs, and jobs whose lease expired, to ready.
-- A job whose lease expired after it had been delivered max-deliveries times is
-- dead-lettered instead (a poison pill that crashes or hangs its worker).
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset, 5..14 ready lists (priority 0..9),
--       15 dead list, 16 dead payloads hash, 17 dead-dropped counter
-- ARGV: 1 max jobs, 2 lease (ms), 3 max deliveries (0 for no limit), 4 dead-letter cap
-- Returns: {next_change_ms, id1, payload1, deliveries1, token1, id2, ...}; next_change_ms is
-- how long until a delayed job falls due or a lease expires (-1 for never)
local now_ms = now_ms()
local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_deliveries, dead_cap = tonumber(ARGV[3]), tonumber(ARGV[4])

local function meta(id)
  local m = redis.call('HGET', KEYS[2], id)
  if not m then return 5, 0 end
  local p, d = string.match(m, '^(%d+):(%d+):')
  return tonumber(p), tonumber(d)
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[3], id)
  local p = meta(id)
  redis.call('RPUSH', KEYS[5 + p], id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[4], id)
  local p, d = meta(id)
  if max_deliveries > 0 and d >= max_deliveries then
    local payload = redis.call('HGET', KEYS[1], id) or ''
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    local reason = 'poison: delivered ' .. d .. ' times and never settled; it may crash or hang its worker'
    bury(KEYS[15], KEYS[16], KEYS[17], id, payload, reason, now_ms, dead_cap)
  else
    redis.call('HSET', KEYS[2], id, p .. ':' .. d .. ':')
    redis.call('LPUSH', KEYS[5 + p], id)
  end
end

local out = {-1}
local left = max
for p = 9, 0, -1 do
  if left <= 0 then break end
  local ids = redis.call('LPOP', KEYS[5 + p], left)
  if ids then
    for _, id in ipairs(ids) do
      local payload = redis.call('HGET', KEYS[1], id)
      if payload then
        local _, d = meta(id)
        d = d + 1
        local token = tostring(redis.call('HINCRBY', KEYS[2], '~seq', 1))
        redis.call('HSET', KEYS[2], id, p .. ':' .. d .. ':' .. token)
        redis.call('ZADD', KEYS[4], now_ms + lease, id)
        table.insert(out, id)
        table.insert(out, payload)
        table.insert(out, d)
        table.insert(out, token)
        left = left - 1
      end
    end
  end
end

local next_change = -1
for _, key in ipairs({KEYS[3], KEYS[4]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - now_ms)
    if next_change < 0 or wait < next_change then next_change = wait end
  end
end
out[1] = next_change
return out
