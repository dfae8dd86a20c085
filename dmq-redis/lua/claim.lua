-- Claims up to N due jobs from one queue, highest priority first, each under a lease
-- with a fresh token naming the worker. First moves due delayed jobs to ready and
-- takes back jobs whose lease expired (a job delivered max-deliveries times is
-- dead-lettered instead: a poison pill that crashes or hangs its worker).
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset,
--       5..14 ready lists (priority 0..9), 15 dead list, 16 dead payloads hash,
--       17 dead-dropped counter, 18 signal list
-- ARGV: 1 max jobs, 2 lease (ms), 3 max deliveries (0 for no limit), 4 dead-letter cap,
--       5 worker id
-- Returns: {next_change_ms, id1, payload1, deliveries1, token1, id2, ...}; when no job
-- was claimed, next_change_ms is how long until a delayed job falls due or a lease
-- expires (-1 for never, and always -1 when jobs were claimed)
local now = now_ms()
local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_deliveries, dead_cap, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  each_chunk('ZREM', KEYS[3], due)
  local metas = hmget(KEYS[2], due)
  for i, id in ipairs(due) do
    local p = parse_meta(metas[i], 5)
    redis.call('RPUSH', KEYS[5 + p], id)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  give_back(expired, hmget(KEYS[2], expired), 'lease expired', now, max_deliveries, dead_cap)
end

local out = {-1}
local left = max
local seq, suffix = nil, nil
local n = 0
local meta_args, lease_args = {}, {}
local lists = {}
for p = 9, 0, -1 do lists[#lists + 1] = KEYS[5 + p] end
while left > 0 do
  local popped = redis.call('LMPOP', 10, lists[1], lists[2], lists[3], lists[4], lists[5],
    lists[6], lists[7], lists[8], lists[9], lists[10], 'LEFT', 'COUNT', left)
  if not popped then break end
  local key, ids = popped[1], popped[2]
  local p = tonumber(string.match(key, ':(%d)$'))
  local payloads = hmget(KEYS[1], ids)
  local metas = hmget(KEYS[2], ids)
  if not seq then
    seq = redis.call('HINCRBY', KEYS[2], '~seq', 1) .. '.'
    suffix = '.' .. now .. '@' .. worker
  end
  local deadline = now + lease
  local o, m, l = #out, #meta_args, #lease_args
  for i, id in ipairs(ids) do
    local payload = payloads[i]
    if payload then
      local d = 1
      if metas[i] then
        local _
        _, d = parse_meta(metas[i], p)
        d = d + 1
      end
      n = n + 1
      local token = seq .. n .. suffix
      meta_args[m + 1], meta_args[m + 2] = id, p .. ':' .. d .. ':' .. token
      lease_args[l + 1], lease_args[l + 2] = deadline, id
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, payload, d, token
      m, l, o = m + 2, l + 2, o + 4
    end
  end
  left = left - #ids
end
if n > 0 then
  each_chunk('HSET', KEYS[2], meta_args, 2)
  each_chunk('ZADD', KEYS[4], lease_args, 2)
  -- More may be ready: pass the wake-up on to another blocked claimer.
  if left <= 0 then signal(KEYS[18]) end
  return out
end

local next_change = -1
for _, key in ipairs({KEYS[3], KEYS[4]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - now)
    if next_change < 0 or wait < next_change then next_change = wait end
  end
end
out[1] = next_change
return out
