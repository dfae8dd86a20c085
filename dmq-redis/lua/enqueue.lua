-- Adds jobs to one or more queues, atomically: all of them, or none when an id is
-- already queued (ready, delayed or in flight) or repeated in the batch.
-- KEYS: per queue, 16 keys: payloads hash, meta hash, delayed zset, signal list,
--       ready lists (priority 0..9), gates hash, gated zset; queue i's keys start at
--       KEYS[i * 16 + 1]; then, for a single job with an idempotency key, the queue's
--       in-flight zset and that key's key, last
-- ARGV: 1 job count n, then per job: queue index (from 0), id, priority (0-9),
--       due (Unix ms, 0 for now), payload; then the count m of jobs with a gate, and
--       per such job: its index in the batch (from 0), the gate's name, its limits
--       ("<interval µs>:<burst>:<concurrency>", 0 for none); then the count k of jobs
--       with a group, and per such job: its index in the batch, its group; then, with
--       an idempotency
--       key, its ttl (ms) and how it holds: 'ttl' (while the key lasts), 'queued'
--       (while the job it names is in the queue and not in flight), 'until_done'
--       (while that job is in the queue) or 'debounce' (while that job waits in the
--       delayed set: the same job again, by id, replaces its payload and due time)
-- A job with a gate is queued as any other: the claim that takes it holds it back at
-- its gate when the gate is closed. Its gate and the gate's limits (the last enqueue's
-- hold) go to the gates hash, and the queue's meta hash gets the field ~gates.
-- A job with a group (fair claiming) due now waits in the gated zset as
-- g<group>\0<9 - priority><seq>\0<id> instead of a ready list (claims take those round
-- robin across groups); its group goes to the gates hash as g:<id> (for a delayed
-- job, to join the group when due; for a retry, to join it again), and the meta hash
-- gets ~gates too.
-- Returns: {"ok"}, {"duplicate", id, queue index} or {"existing", id of the job the
--          idempotency key belongs to} (nothing added; a key never holds for a job
--          of its own id but to replace it)
-- A key of the wrong type fails the script with nothing added: its first write fails
-- before it changes anything, and a later one takes back what came before it (see
-- `checked` in lib.lua).
local n = tonumber(ARGV[1])
local gated = tonumber(ARGV[2 + n * 5])
local grouped = tonumber(ARGV[3 + n * 5 + gated * 3])
local idem_ttl = tonumber(ARGV[4 + n * 5 + gated * 3 + grouped * 2])
local idem_key = idem_ttl and KEYS[#KEYS]
if idem_key then
  local holder = checked(redis.pcall('GET', idem_key), nil, 'string', #KEYS)
  if holder then
    local hold, id = ARGV[5 + n * 5 + gated * 3 + grouped * 2], ARGV[3]
    local holds = true
    if hold == 'queued' or hold == 'until_done' then
      holds = checked(redis.pcall('HEXISTS', KEYS[1], holder), nil, 'hash', 1) == 1
      if holds and hold == 'queued' then
        local flying = checked(redis.pcall('ZSCORE', KEYS[#KEYS - 1], holder), nil, 'zset',
          #KEYS - 1)
        holds = not flying
      end
    elseif hold == 'debounce' then
      holds = checked(redis.pcall('ZSCORE', KEYS[3], holder), nil, 'zset', 3) ~= false
      if holds and holder == id then
        -- The job waits out its delay still: this enqueue replaces it.
        expect('hash', 1, 2)
        expect('list', 4)
        local priority = tonumber(ARGV[4])
        redis.call('HSET', KEYS[1], id, ARGV[6])
        redis.call('HSET', KEYS[2], id, priority .. ':0:')
        redis.call('ZADD', KEYS[3], math.max(tonumber(ARGV[5]), 1), id)
        redis.call('SET', idem_key, id, 'PX', idem_ttl)
        if redis.call('LLEN', KEYS[4]) == 0 then redis.call('LPUSH', KEYS[4], '1') end
        return {'ok'}
      end
    end
    if holds or holder == id then return {'existing', holder} end
  end
end
-- How to take back each write made so far.
local made = {}
local function undo()
  for i = #made, 1, -1 do redis.call(unpack(made[i])) end
end
-- Wakes one blocked claimer of the queue whose signal list is KEYS[i], unless a
-- wake-up is already waiting or the queue is paused (field ~paused of its meta hash,
-- KEYS[i - 2]): its resume wakes a claimer.
local function wake(i)
  if checked(redis.pcall('HEXISTS', KEYS[i - 2], '~paused'), undo, 'hash', i - 2) == 1 then
    return
  end
  if checked(redis.pcall('LLEN', KEYS[i]), undo, 'list', i) == 0 then
    redis.call('LPUSH', KEYS[i], '1')
    made[#made + 1] = {'LPOP', KEYS[i]}
  end
end
for i = 0, n - 1 do
  local b = 2 + i * 5
  local k = tonumber(ARGV[b]) * 16 + 1
  local id = ARGV[b + 1]
  if checked(redis.pcall('HSETNX', KEYS[k], id, ARGV[b + 4]), undo, 'hash', k) == 0 then
    undo()
    return {'duplicate', id, ARGV[b]}
  end
  made[#made + 1] = {'HDEL', KEYS[k], id}
end
-- The group of each grouped job, by its index in the batch.
local group_of = {}
for i = 0, grouped - 1 do
  local a = 4 + n * 5 + gated * 3 + i * 2
  group_of[tonumber(ARGV[a])] = ARGV[a + 1]
end
local now = nil
local ready = {}
local order = {}
local joining = {}
for i = 0, n - 1 do
  local b = 2 + i * 5
  local base = tonumber(ARGV[b]) * 16
  local id, priority, due = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if due > 0 and not now then now = now_ms() end
  if due > 0 and due > now then
    checked(redis.pcall('HSET', KEYS[base + 2], id, priority .. ':0:'), undo, 'hash', base + 2)
    made[#made + 1] = {'HDEL', KEYS[base + 2], id}
    checked(redis.pcall('ZADD', KEYS[base + 3], due, id), undo, 'zset', base + 3)
    made[#made + 1] = {'ZREM', KEYS[base + 3], id}
    wake(base + 4)
  elseif group_of[i] then
    joining[#joining + 1] = {base, id, priority, group_of[i]}
  else
    local key = base + 5 + priority
    if not ready[key] then ready[key] = {}; order[#order + 1] = key end
    local ids = ready[key]
    ids[#ids + 1] = id
  end
end
for _, key in ipairs(order) do
  local ids = ready[key]
  local len = 0
  for i = 1, #ids, 4000 do
    local last = math.min(i + 3999, #ids)
    len = checked(redis.pcall('RPUSH', KEYS[key], unpack(ids, i, last)), undo, 'list', key)
    made[#made + 1] = {'RPOP', KEYS[key], last - i + 1}
  end
  -- A list that was empty may have claimers blocked on it; one that was not has
  -- claimers busy with it.
  if len == #ids then wake(key - 5 - ((key - 5) % 16) + 4) end
end
for _, job in ipairs(joining) do
  local base, id, priority, group = job[1], job[2], job[3], job[4]
  local seq = checked(redis.pcall('HINCRBY', KEYS[base + 15], '~seq', 1), undo, 'hash', base + 15)
  made[#made + 1] = {'HINCRBY', KEYS[base + 15], '~seq', -1}
  local member = group_member(group, priority, seq, id)
  checked(redis.pcall('ZADD', KEYS[base + 16], 0, member), undo, 'zset', base + 16)
  made[#made + 1] = {'ZREM', KEYS[base + 16], member}
  wake(base + 4)
end
for i, group in pairs(group_of) do
  local b = 2 + i * 5
  local base = tonumber(ARGV[b]) * 16
  checked(redis.pcall('HSET', KEYS[base + 15], 'g:' .. ARGV[b + 1], group), undo, 'hash',
    base + 15)
  made[#made + 1] = {'HDEL', KEYS[base + 15], 'g:' .. ARGV[b + 1]}
  checked(redis.pcall('HSET', KEYS[base + 2], '~gates', '1'), undo, 'hash', base + 2)
end
for i = 0, gated - 1 do
  local a = 3 + n * 5 + i * 3
  local job = tonumber(ARGV[a])
  local b = 2 + job * 5
  local base = tonumber(ARGV[b]) * 16
  local g = ARGV[a + 1]
  checked(redis.pcall('HSET', KEYS[base + 15], 'j:' .. ARGV[b + 1], g, 'c:' .. g, ARGV[a + 2]),
    undo, 'hash', base + 15)
  made[#made + 1] = {'HDEL', KEYS[base + 15], 'j:' .. ARGV[b + 1]}
  checked(redis.pcall('HSET', KEYS[base + 2], '~gates', '1'), undo, 'hash', base + 2)
end
if idem_key then redis.call('SET', idem_key, ARGV[3], 'PX', idem_ttl) end
return {'ok'}
