-- Claims due jobs from one queue, each under a lease with a fresh token naming the
-- worker and this claim's tag. First moves due delayed jobs to ready and takes back
-- jobs whose lease expired (into the suspect list; see give_back). Then either takes
-- the oldest suspect job alone, flagged to run isolated, or up to N ready jobs,
-- highest priority first. An entry that is not a task id, or whose envelope is
-- missing, is dropped, counted and reported, never handed out: the good jobs beside it
-- are claimed as usual.
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset,
--       5..14 ready lists (priority 0..9), 15 dead list, 16 dead payloads hash,
--       17 dead-dropped counter, 18 signal list, 19 suspect list, 20 bad-entries counter,
--       21 gates hash, 22 gated zset, 23 gates-due zset
-- ARGV: 1 max jobs, 2 lease (ms), 3 max deliveries (0 for no limit), 4 dead-letter cap,
--       5 worker id, 6 claim tag, 7 whether a suspect job may be taken (1 or 0)
-- Returns: {next_change_ms, {bad entry 1, why 1, ...}, isolated (1 when the one job
-- claimed must run alone, else 0), {held id 1, its gate, 'rate' or 'concurrency' (the
-- limit that holds it), its payload, ...: the jobs this claim held back at their
-- gates}, id1, payload1, deliveries1, token1, id2, ...}; when
-- no job was claimed, next_change_ms is how long until a delayed job falls due or a
-- lease expires (-1 for never, 0 when it dropped bad entries and more may be ready,
-- and always -1 when jobs were claimed).
-- A paused queue (field ~paused of its meta hash) hands out nothing: its upkeep runs,
-- and the claim returns as one that found no job and nothing coming (its resume sends
-- the wake-up).
-- Gates (flow limits): a job with a gate starts only when its gate lets it (its rate
-- and its concurrency); one held back waits at its gate, in the gated zset, and a
-- claim first takes the jobs of the gates that are due (gates-due zset), then ready
-- jobs, holding back those whose gate is closed. A gate's running slots are the jobs it
-- let through; a full gate takes back the slots of jobs no longer in flight. Nothing
-- of this runs on a queue whose meta hash lacks ~gates (no job of it had a gate or a
-- group). Grouped jobs (fair claiming) wait in the gated zset too, and are taken
-- round robin across groups (see take_grouped).
-- A key of the wrong type fails the claim before it changes anything: most claims
-- (no upkeep) prove their keys by reads they make anyway and by their first write,
-- and put back what they popped when a later step fails (see `checked` in lib.lua).
local now = now_ms()
local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_deliveries, dead_cap, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

-- Reads come first: a key of the wrong type fails them before anything changed.
local flags = checked(redis.pcall('HMGET', KEYS[2], '~paused', '~gates'), nil, 'hash', 2)
local paused, gated_queue = flags[1] ~= false, flags[2] ~= false
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
if upkeep then
  expect_queue_keys()
elseif gated_queue and not paused then
  -- Jobs taken from gates are not put back on a failure: prove every key first.
  expect('hash', 1, 2)
  expect_counter(2, '~seq')
  expect('zset', 4)
  expect('list', 5, 14)
  expect('list', 18)
  expect('hash', 21)
  expect('zset', 22, 23)
  expect('string', 20)
end
if #due > 0 then
  each_chunk('ZREM', KEYS[3], due)
  local metas = hmget(2, due)
  -- A grouped job joins its group (see take_grouped).
  local groups = {}
  if gated_queue then
    local fields = {}
    for i, id in ipairs(due) do fields[i] = 'g:' .. id end
    groups = redis.call('HMGET', KEYS[21], unpack(fields))
  end
  for i, id in ipairs(due) do
    local p = parse_meta(metas[i], 5)
    if groups[i] then
      local seq = redis.call('HINCRBY', KEYS[21], '~seq', 1)
      redis.call('ZADD', KEYS[22], 0, group_member(groups[i], p, seq, id))
    else
      redis.call('RPUSH', KEYS[5 + p], id)
    end
  end
end
if #expired > 0 then
  give_back(expired, hmget(2, expired), 'lease expired', now, max_deliveries, dead_cap)
end

local bad = {}
local held = {}
local out = {-1, bad, 0, held}
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

-- The gates this claim looked at, by name: limits, rate state and slots taken.
local gates = {}
local now_us

-- Gate `g`'s state, read once per claim. A full gate first takes back the slots of
-- jobs no longer in flight (their lease lapsed, or they left by a path that did not
-- free them).
local function gate(g)
  local st = gates[g]
  if st then return st end
  if not now_us then
    local t = redis.call('TIME')
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local v = redis.call('HMGET', KEYS[21], 'c:' .. g, 't:' .. g)
  st = {interval = 0, burst = 1, conc = 0, tat = tonumber(v[2]) or 0, running = 0}
  local interval, burst, conc = string.match(v[1] or '', '^(%d+):(%d+):(%d+)$')
  if interval then
    st.interval, st.burst, st.conc = tonumber(interval), math.max(tonumber(burst), 1), tonumber(conc)
  end
  if st.conc > 0 then
    local lo, hi = gate_range('r', g)
    st.running = redis.call('ZLEXCOUNT', KEYS[22], lo, hi)
    if st.running >= st.conc then
      for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[22], lo, hi)) do
        if not redis.call('ZSCORE', KEYS[4], string.sub(m, #g + 3)) then
          redis.call('ZREM', KEYS[22], m)
          st.running = st.running - 1
        end
      end
    end
  end
  gates[g] = st
  return st
end

-- Whether gate `g` lets job `id` start now: its concurrency has a free slot and its
-- rate (a GCRA: one start per interval, up to `burst` at once) allows one. Takes the
-- slot and the rate's share when it does; when not, says which limit holds the job.
local function admit(g, id)
  local st = gate(g)
  if st.conc > 0 and st.running >= st.conc then return false, 'concurrency' end
  if st.interval > 0 then
    local tat = math.max(st.tat, now_us)
    if tat - now_us > st.interval * (st.burst - 1) then return false, 'rate' end
    st.tat, st.moved = tat + st.interval, true
  end
  if st.conc > 0 then
    redis.call('ZADD', KEYS[22], 0, 'r' .. g .. '\0' .. id)
    st.running = st.running + 1
  end
  return true
end

-- Holds job `id` (of priority `p`) back at gate `g`, after the jobs waiting there of
-- its priority, and reports it (held back by limit `why`).
local function park(g, p, id, why)
  local seq = redis.call('HINCRBY', KEYS[21], '~seq', 1)
  redis.call('ZADD', KEYS[22], 0,
    'w' .. g .. '\0' .. (9 - tonumber(p)) .. string.format('%015d', seq) .. '\0' .. id)
  local h = #held
  held[h + 1], held[h + 2], held[h + 3] = id, g, why
  held[h + 4] = redis.call('HGET', KEYS[1], id) or ''
end

-- Writes back the rate state of the gates looked at, and when each may let its next
-- waiting job through (none waiting: out of the due set; full: inf).
local function save_gates()
  for g, st in pairs(gates) do
    if st.moved then redis.call('HSET', KEYS[21], 't:' .. g, string.format('%d', st.tat)) end
    local lo, hi = gate_range('w', g)
    if #redis.call('ZRANGEBYLEX', KEYS[22], lo, hi, 'LIMIT', 0, 1) == 0 then
      redis.call('ZREM', KEYS[23], g)
    elseif st.conc > 0 and st.running >= st.conc then
      redis.call('ZADD', KEYS[23], 'inf', g)
    elseif st.interval > 0 then
      local next_ms = math.ceil((st.tat - st.interval * (st.burst - 1)) / 1000)
      redis.call('ZADD', KEYS[23], math.max(next_ms, now), g)
    else
      redis.call('ZADD', KEYS[23], now, g)
    end
  end
  gates = {}
end

local function report()
  save_gates()
  if #bad > 0 then redis.call('INCRBY', KEYS[20], #bad / 2) end
  return out
end

-- A suspect job goes alone. (Only a claim with upkeep can have one.)
while upkeep and ARGV[7] == '1' and redis.call('LLEN', KEYS[19]) > 0 do
  local id = redis.call('LPOP', KEYS[19])
  -- One its gate holds back waits at the head of the list; ready jobs go meanwhile.
  local g = gated_queue and redis.call('HGET', KEYS[21], 'j:' .. id)
  if g and not admit(g, id) then
    redis.call('LPUSH', KEYS[19], id)
    break
  end
  local payload = redis.call('HGET', KEYS[1], id)
  local meta = redis.call('HGET', KEYS[2], id)
  if usable(id, payload, meta) then
    local p, d, s = parse_meta(meta, 5)
    local token = next_token()
    redis.call('HSET', KEYS[2], id, make_meta(p, d + 1, s, true, token))
    redis.call('ZADD', KEYS[4], deadline, id)
    out[3], out[5], out[6], out[7], out[8] = 1, id, payload, d + 1, token
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
-- First the jobs waiting at gates that are due, oldest first, while each lets them.
if gated_queue then
  for _, g in ipairs(redis.call('ZRANGEBYSCORE', KEYS[23], '-inf', now, 'LIMIT', 0, 16)) do
    if left <= 0 then break end
    local lo, hi = gate_range('w', g)
    for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[22], lo, hi, 'LIMIT', 0, left)) do
      local id = string.match(m, '%z([^%z]*)$')
      local p = tonumber(string.match(string.sub(m, #g + 3, #g + 3), '^%d$'))
      if not id or not p then
        -- Not a member dmq wrote: dropped, so that it holds back no job behind it.
        redis.call('ZREM', KEYS[22], m)
      else
        if not admit(g, id) then break end
        redis.call('ZREM', KEYS[22], m)
        ids[#ids + 1] = id
        priorities[#priorities + 1] = tostring(9 - p)
        left = left - 1
      end
    end
  end
end
-- At most this many jobs are held back at gates per claim; the next claim goes on.
local parked = 0

-- Takes up to `k` grouped jobs (fair claiming), one of each group in turn: the first
-- job (highest priority, then oldest) of the group after the one the queue's last
-- claim took from (field ~last of the gates hash), round robin over the groups in
-- the order of their names. One its gate holds back waits at the gate. Returns how
-- many it took.
local function take_grouped(k)
  local last = redis.call('HGET', KEYS[21], '~last')
  local took = 0
  while took < k and parked < 1000 do
    local m
    if last then
      m = redis.call('ZRANGEBYLEX', KEYS[22], '[g' .. last .. '\1', '(h', 'LIMIT', 0, 1)[1]
    end
    if not m then m = redis.call('ZRANGEBYLEX', KEYS[22], '[g', '(h', 'LIMIT', 0, 1)[1] end
    if not m then break end
    redis.call('ZREM', KEYS[22], m)
    local g, q, id = string.match(m, '^g([^%z]*)%z(%d)%d*%z([^%z]*)$')
    -- (A member dmq did not write is dropped, holding back no job behind it.)
    if g then
      last = g
      local p = tostring(9 - tonumber(q))
      local gate_name = redis.call('HGET', KEYS[21], 'j:' .. id)
      local ok, why = true, nil
      if gate_name then ok, why = admit(gate_name, id) end
      if not ok then
        park(gate_name, p, id, why)
        parked = parked + 1
      else
        ids[#ids + 1], priorities[#priorities + 1] = id, p
        took = took + 1
      end
    end
  end
  if last then redis.call('HSET', KEYS[21], '~last', last) end
  return took
end

-- Grouped jobs take half the claim while ungrouped ones wait, and the rest of it
-- when those run out. An odd slot (a claim of one job, say) goes to each side by
-- turns (field ~turn of the gates hash), so that neither starves the other.
if gated_queue and left > 0 then
  local half = math.floor(left / 2)
  if left % 2 == 1 then
    -- (Text another program wrote there counts as 0, and is overwritten.)
    local turn = (tonumber(redis.call('HGET', KEYS[21], '~turn')) or 0) % 2
    redis.call('HSET', KEYS[21], '~turn', 1 - turn)
    if turn == 0 then half = half + 1 end
  end
  if half > 0 then left = left - take_grouped(half) end
end
while left > 0 and parked < 1000 do
  local got = checked(redis.pcall('LMPOP', 10, lists[1], lists[2], lists[3], lists[4],
    lists[5], lists[6], lists[7], lists[8], lists[9], lists[10], 'LEFT', 'COUNT', left),
    unpop, 'list', 5, 14)
  if not got then break end
  popped[#popped + 1] = got
  local p = string.match(got[1], ':(%d)$')
  local names = gated_queue and gates_of(got[2], 21, unpop)
  for i, id in ipairs(got[2]) do
    local ok, why = true, nil
    if names and names[i] then ok, why = admit(names[i], id) end
    if not ok then
      park(names[i], p, id, why)
      parked = parked + 1
    else
      ids[#ids + 1], priorities[#priorities + 1] = id, p
      left = left - 1
    end
  end
end
if gated_queue and left > 0 then left = left - take_grouped(left) end
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

save_gates()
local next_change = -1
local sources = {KEYS[3], KEYS[4]}
if gated_queue then sources[3] = KEYS[23] end
for _, key in ipairs(sources) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] and first[2] ~= 'inf' then
    local wait = math.max(0, tonumber(first[2]) - now)
    if next_change < 0 or wait < next_change then next_change = wait end
  end
end
-- Jobs held back at gates made way: the claim may go on at once.
if parked >= 1000 then next_change = 0 end
-- A claim that found only bad entries made way: the next one may find jobs at once.
if #bad > 0 then next_change = 0 end
out[1] = next_change
return report()
