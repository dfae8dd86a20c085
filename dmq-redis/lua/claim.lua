-- Claims due jobs from one queue, each under a lease with a fresh token naming the
-- worker and this claim's tag. First moves due delayed jobs to ready and takes back
-- jobs whose lease expired (into the suspect list; see give_back). Then either takes
-- the oldest suspect job alone, flagged to run isolated, or up to N ready jobs,
-- highest priority first. An entry that is not a task id, or whose envelope is
-- missing, is dropped, counted and reported, never handed out: the good jobs beside it
-- are claimed as usual.
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset,
--       5..14 ready lists (priority 0..9), 15 dead list, 16 dead payloads hash,
--       17 dead-dropped counter, 18 signal list, 19 suspect list, 20 bad-entries counter
-- ARGV: 1 max jobs, 2 lease (ms), 3 max deliveries (0 for no limit), 4 dead-letter cap,
--       5 worker id, 6 claim tag, 7 whether a suspect job may be taken (1 or 0)
-- Returns: {next_change_ms, {bad entry 1, why 1, ...}, id1, payload1, deliveries1,
-- token1, isolated1 (1 or 0), id2, ...}; when no job was claimed, next_change_ms is how
-- long until a delayed job falls due or a lease expires (-1 for never, and always -1
-- when jobs were claimed)
expect_queue_keys()
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

local bad = {}
local out = {-1, bad}
local seq, suffix = nil, nil
local n = 0
local deadline = now + lease
local meta_args, lease_args = {}, {}

-- Whether `id` can be handed out: shaped like a task id, with an envelope, and not
-- in flight already (a copy of an id pushed twice). One that cannot is dropped (with
-- its leftovers, unless it is a copy), and reported. (The worker drops the rest: ids
-- with other characters than lowercase hex digits, and copies within one claim.)
local function usable(id, payload, meta)
  if meta and token_of(meta) ~= '' then
    bad[#bad + 1], bad[#bad + 2] = id, 'a copy of a job already claimed'
    return false
  end
  if not is_task_id(id) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    bad[#bad + 1], bad[#bad + 2] = id, 'not a task id'
    return false
  end
  if not payload then
    redis.call('HDEL', KEYS[2], id)
    bad[#bad + 1], bad[#bad + 2] = id, 'no envelope stored for it'
    return false
  end
  return true
end

local function next_token()
  if not seq then
    seq = redis.call('HINCRBY', KEYS[2], '~seq', 1) .. '.'
    suffix = '.' .. now .. '.' .. ARGV[6] .. '@' .. worker
  end
  n = n + 1
  return seq .. n .. suffix
end

local function report()
  if #bad > 0 then redis.call('INCRBY', KEYS[20], #bad / 2) end
  return out
end

-- A suspect job goes alone.
while ARGV[7] == '1' and redis.call('LLEN', KEYS[19]) > 0 do
  local id = redis.call('LPOP', KEYS[19])
  local payload = redis.call('HGET', KEYS[1], id)
  local meta = redis.call('HGET', KEYS[2], id)
  if usable(id, payload, meta) then
    local p, d, s = parse_meta(meta, 5)
    local token = next_token()
    redis.call('HSET', KEYS[2], id, make_meta(p, d + 1, s, true, token))
    redis.call('ZADD', KEYS[4], deadline, id)
    out[3], out[4], out[5], out[6], out[7] = id, payload, d + 1, token, 1
    -- Another idle claimer may take the next one.
    if redis.call('LLEN', KEYS[19]) > 0 then signal(KEYS[18]) end
    return report()
  end
end

local left = max
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
  local o, m, l = #out, #meta_args, #lease_args
  for i, id in ipairs(ids) do
    local payload = payloads[i]
    if usable(id, payload, metas[i]) then
      local d, s = 0, 0
      if metas[i] then
        local _
        _, d, s = parse_meta(metas[i], p)
      end
      local token = next_token()
      meta_args[m + 1], meta_args[m + 2] = id, make_meta(p, d + 1, s, false, token)
      lease_args[l + 1], lease_args[l + 2] = deadline, id
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = id, payload, d + 1, token, 0
      m, l, o = m + 2, l + 2, o + 5
    end
  end
  left = left - #ids
end
if n > 0 then
  each_chunk('HSET', KEYS[2], meta_args, 2)
  each_chunk('ZADD', KEYS[4], lease_args, 2)
  -- More may be ready: pass the wake-up on to another blocked claimer.
  if left <= 0 then signal(KEYS[18]) end
  return report()
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
return report()
