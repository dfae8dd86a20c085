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
-- Returns: {next_change_ms, {bad entry 1, why 1, ...}, isolated (1 when the one job
-- claimed must run alone, else 0), id1, payload1, deliveries1, token1, id2, ...}; when
-- no job was claimed, next_change_ms is how long until a delayed job falls due or a
-- lease expires (-1 for never, 0 when it dropped bad entries and more may be ready,
-- and always -1 when jobs were claimed).
-- A paused queue (field ~paused of its meta hash) hands out nothing: its upkeep runs,
-- and the claim returns as one that found no job and nothing coming (its resume sends
-- the wake-up).
-- A key of the wrong type fails the claim before it changes anything: most claims
-- (no upkeep) prove their keys by reads they make anyway and by their first write,
-- and put back what they popped when a later step fails (see `checked` in lib.lua).
local now = now_ms()
local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_deliveries, dead_cap, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

-- Reads come first: a key of the wrong type fails them before anything changed.
local paused = checked(redis.pcall('HEXISTS', KEYS[2], '~paused'), nil, 'hash', 2) == 1
local due = checked(redis.pcall('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000),
  nil, 'zset', 3)
local expired = checked(redis.pcall('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000),
  nil, 'zset', 4)
local suspects = 0
if ARGV[7] == '1' then suspects = checked(redis.pcall('LLEN', KEYS[19]), nil, 'list', 19) end
-- Upkeep (due jobs, expired leases, suspect jobs) writes to many keys: a claim that has
-- some checks them all first. One that has none (most claims) proves each key it
-- writes by a read, or undoes its pops when a later step fails.
local upkeep = #due > 0 or #expired > 0 or suspects > 0
if upkeep then expect_queue_keys() end
if #due > 0 then
  each_chunk('ZREM', KEYS[3], due)
  local metas = hmget(2, due)
  for i, id in ipairs(due) do
    local p = parse_meta(metas[i], 5)
    redis.call('RPUSH', KEYS[5 + p], id)
  end
end
if #expired > 0 then
  give_back(expired, hmget(2, expired), 'lease expired', now, max_deliveries, dead_cap)
end

local bad = {}
local out = {-1, bad, 0}
if paused then return out end
local seq, suffix = nil, nil
local n = 0
local deadline = now + lease
local meta_args, lease_args = {}, {}

-- The ready lists' pops so far ({list, ids} each), and how to put them back.
local popped = {}
local function unpop()
  for i = #popped, 1, -1 do
    local ids, back = popped[i][2], {}
    for j = #ids, 1, -1 do back[#back + 1] = ids[j] end
    each_chunk('LPUSH', popped[i][1], back)
  end
end

-- Whether `id` can be handed out: shaped like a task id, with an envelope, and not
-- in flight already (a copy of an id pushed twice). One that cannot is dropped (with
-- its leftovers, unless it is a copy), and reported. (The worker drops the rest: ids
-- with other characters than lowercase hex digits, and copies within one claim.)
local function usable(id, payload, meta)
  local why
  if meta and token_of(meta) ~= '' then
    why = 'a copy of a job already claimed'
  elseif not is_task_id(id) then
    why = 'not a task id'
  elseif not payload then
    why = 'no envelope stored for it'
  else
    return true
  end
  -- The first bad entry proves the counter report() increments, before it drops it.
  if #bad == 0 then
    expect_counter(20, nil, checked(redis.pcall('GET', KEYS[20]), unpop, 'string', 20), unpop)
  end
  if why == 'not a task id' then redis.call('HDEL', KEYS[1], id) end
  if why ~= 'a copy of a job already claimed' then redis.call('HDEL', KEYS[2], id) end
  bad[#bad + 1], bad[#bad + 2] = id, why
  return false
end

local function next_token()
  if not seq then
    seq = redis.call('HINCRBY', KEYS[2], '~seq', 1) .. '.'
    -- The claim's time in its tokens makes their fences (see fence_of): later than
    -- the queue's previous claim's, so that a job released and claimed again within
    -- one millisecond still gets a greater fence.
    local at = now
    local last = tonumber(redis.call('HGET', KEYS[2], '~at'))
    if last and at <= last then at = last + 1 end
    redis.call('HSET', KEYS[2], '~at', at)
    suffix = '.' .. at .. '.' .. ARGV[6] .. '@' .. worker
  end
  n = n + 1
  return seq .. n .. suffix
end

local function report()
  if #bad > 0 then redis.call('INCRBY', KEYS[20], #bad / 2) end
  return out
end

-- A suspect job goes alone. (Only a claim with upkeep can have one.)
while upkeep and ARGV[7] == '1' and redis.call('LLEN', KEYS[19]) > 0 do
  local id = redis.call('LPOP', KEYS[19])
  local payload = redis.call('HGET', KEYS[1], id)
  local meta = redis.call('HGET', KEYS[2], id)
  if usable(id, payload, meta) then
    local p, d, s = parse_meta(meta, 5)
    local token = next_token()
    redis.call('HSET', KEYS[2], id, make_meta(p, d + 1, s, true, token))
    redis.call('ZADD', KEYS[4], deadline, id)
    out[3], out[4], out[5], out[6], out[7] = 1, id, payload, d + 1, token
    -- Another idle claimer may take the next one.
    if redis.call('LLEN', KEYS[19]) > 0 then signal(KEYS[18]) end
    return report()
  end
end

-- Up to `max` ready jobs, highest priority first. The first pop fails, on a list of
-- the wrong type, before it takes anything; a later failure puts back what was taken.
local left = max
local lists = {}
for p = 9, 0, -1 do lists[#lists + 1] = KEYS[5 + p] end
local ids, priorities = {}, {}
while left > 0 do
  local got = checked(redis.pcall('LMPOP', 10, lists[1], lists[2], lists[3], lists[4],
    lists[5], lists[6], lists[7], lists[8], lists[9], lists[10], 'LEFT', 'COUNT', left),
    unpop, 'list', 5, 14)
  if not got then break end
  popped[#popped + 1] = got
  local p = string.match(got[1], ':(%d)$')
  for _, id in ipairs(got[2]) do ids[#ids + 1], priorities[#priorities + 1] = id, p end
  left = left - #got[2]
end
if #ids > 0 then
  -- These reads prove the hashes written below; the meta read takes the token
  -- counter along.
  local payloads = checked(redis.pcall('HMGET', KEYS[1], unpack(ids)), unpop, 'hash', 1)
  ids[#ids + 1] = '~seq'
  local metas = checked(redis.pcall('HMGET', KEYS[2], unpack(ids)), unpop, 'hash', 2)
  ids[#ids] = nil
  expect_counter(2, '~seq', metas[#metas], unpop)
  -- More may be ready: the wake-up passes on to another blocked claimer.
  local wake = left <= 0 and checked(redis.pcall('LLEN', KEYS[18]), unpop, 'list', 18) == 0
  local m, l, o = 0, 0, #out
  -- Strings made once: Lua turns a number into a string with sprintf at every use.
  local until_ms = tostring(deadline)
  for i, id in ipairs(ids) do
    local payload, meta, p = payloads[i], metas[i], priorities[i]
    local token
    if payload and not meta and is_task_id(id) then
      -- A job enqueued ready (most): first delivery, no meta yet.
      token = next_token()
      meta_args[m + 1], meta_args[m + 2] = id, p .. ':1:' .. token
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, payload, 1, token
    elseif usable(id, payload, meta) then
      local _, d, s = parse_meta(meta, tonumber(p))
      token = next_token()
      meta_args[m + 1], meta_args[m + 2] = id, make_meta(p, d + 1, s, false, token)
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, payload, d + 1, token
    end
    if token then
      lease_args[l + 1], lease_args[l + 2] = until_ms, id
      m, l, o = m + 2, l + 2, o + 4
    end
  end
  if n > 0 then
    each_chunk('HSET', KEYS[2], meta_args, 2)
    each_chunk('ZADD', KEYS[4], lease_args, 2)
    if wake then redis.call('LPUSH', KEYS[18], '1') end
    return report()
  end
end

local next_change = -1
for _, key in ipairs({KEYS[3], KEYS[4]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - now)
    if next_change < 0 or wait < next_change then next_change = wait end
  end
end
-- A claim that found only bad entries made way: the next one may find jobs at once.
if #bad > 0 then next_change = 0 end
out[1] = next_change
return report()
