-- Adds jobs to one or more queues, atomically: all of them, or none when an id is
-- already queued (ready, delayed or in flight) or repeated in the batch.
-- KEYS: per queue, 14 keys: payloads hash, meta hash, delayed zset, signal list,
--       ready lists (priority 0..9); queue i's keys start at KEYS[i * 14 + 1]
--       then, for a single job with an idempotency key, that key's key last
-- ARGV: 1 job count n, then per job: queue index (from 0), id, priority (0-9),
--       due (Unix ms, 0 for now), payload; then, with an idempotency key, its ttl (ms)
-- Returns: {"ok"}, {"duplicate", id, queue index} or {"existing", id of the job the
--          idempotency key belongs to} (nothing added)
local n = tonumber(ARGV[1])
local idem_ttl = tonumber(ARGV[2 + n * 5])
local idem_key = idem_ttl and KEYS[#KEYS]
-- The keys these jobs write, checked before anything changes: each queue's payloads
-- hash and signal list, and the lists, set and hash its jobs go to.
local checked = {}
local function need(kind, i)
  if not checked[i] then checked[i] = true; expect(kind, i) end
end
for i = 0, n - 1 do
  local b = 2 + i * 5
  local base = tonumber(ARGV[b]) * 14
  need('hash', base + 1)
  need('list', base + 4)
  if tonumber(ARGV[b + 3]) > 0 then
    need('hash', base + 2)
    need('zset', base + 3)
  end
  need('list', base + 5 + tonumber(ARGV[b + 2]))
end
if idem_key then expect('string', #KEYS) end
if idem_key then
  local existing = redis.call('GET', idem_key)
  if existing then return {'existing', existing} end
end
local added = {}
for i = 0, n - 1 do
  local b = 2 + i * 5
  local payloads = KEYS[tonumber(ARGV[b]) * 14 + 1]
  if redis.call('HSETNX', payloads, ARGV[b + 1], ARGV[b + 4]) == 0 then
    for _, a in ipairs(added) do redis.call('HDEL', a[1], a[2]) end
    return {'duplicate', ARGV[b + 1], ARGV[b]}
  end
  added[#added + 1] = {payloads, ARGV[b + 1]}
end
local now = nil
local ready = {}
local order = {}
for i = 0, n - 1 do
  local b = 2 + i * 5
  local base = tonumber(ARGV[b]) * 14
  local id, priority, due = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if due > 0 and not now then now = now_ms() end
  if due > 0 and due > now then
    redis.call('HSET', KEYS[base + 2], id, priority .. ':0:')
    redis.call('ZADD', KEYS[base + 3], due, id)
    signal(KEYS[base + 4])
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
    len = redis.call('RPUSH', KEYS[key], unpack(ids, i, math.min(i + 3999, #ids)))
  end
  -- A list that was empty may have claimers blocked on it; one that was not has
  -- claimers busy with it.
  if len == #ids then
    local base = key - 5 - ((key - 5) % 14)
    signal(KEYS[base + 4])
  end
end
if idem_key then redis.call('SET', idem_key, ARGV[3], 'PX', idem_ttl) end
return {'ok'}
