-- Shared helpers, prepended to every script when it is loaded (see src/scripts.rs).
--
-- A job's meta is "<priority>:<deliveries>[/<strikes>[i]]:<token>". It is in the queue's
-- meta hash while the job is delayed, in flight, suspect, or back in ready after a
-- release; a job enqueued ready has none (priority from its list, no deliveries, no
-- strikes). Strikes count the times the job's worker was lost while it ran alone
-- (isolated: the "i" flag, set while such a run holds the lease); a job whose strikes
-- reach max-deliveries is dead-lettered as a poison pill. A lease token is
-- "<seq>.<n>.<claimed at, Unix ms>.<claim tag>@<worker>".

-- Whether `id` has the shape of a task id as dmq writes it in Redis: 36 bytes with
-- hyphens where a hyphenated UUID has them. Checked for every job a claim takes, so
-- only the shape: the worker checks the rest (hex digits, lower case) and gives back
-- what fails (drop_bad.lua).
local function is_task_id(id)
  return #id == 36 and string.byte(id, 9) == 45 and string.byte(id, 14) == 45 and
    string.byte(id, 19) == 45 and string.byte(id, 24) == 45
end

-- Fails, before this script changes anything, when one of KEYS[first..last] holds
-- another type than `kind` (a missing key is fine): Redis does not roll a script back,
-- so a WRONGTYPE error halfway through would leave its first changes in place.
local function expect(kind, first, last)
  for i = first, last or first do
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= kind and t ~= 'none' then
      error({err = 'WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t .. ' where dmq keeps a ' ..
        kind .. '; nothing was changed. It was not written by dmq: delete or rename it'})
    end
  end
end

-- Returns `r`, the reply of a redis.pcall on KEYS[first..last] (keys that hold a
-- `kind`), unless it is an error: then runs `undo` (if any), which takes back what the
-- script wrote so far, and fails, naming the key when one holds the wrong type.
-- A hot script checks its keys this way instead of with `expect`, for nothing: its
-- reads come before its first write, its first write fails before it changes anything,
-- and a later write either is proven by an earlier read of the same key or is undone.
local function checked(r, undo, kind, first, last)
  if type(r) == 'table' and r.err then
    if undo then undo() end
    expect(kind, first, last)
    error(r)
  end
  return r
end

-- Redis's own clock, in Unix milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fails, before this script changes anything, when a counter this script increments
-- holds something other than an integer (KEYS[i], or field `field` of hash KEYS[i]).
-- `v` is the counter's value, when the caller has read it already; `undo` as in
-- `checked`.
local function expect_counter(i, field, v, undo)
  if v == nil then
    if field then v = redis.call('HGET', KEYS[i], field) else v = redis.call('GET', KEYS[i]) end
  end
  if v and not string.match(v, '^%-?%d+$') then
    if undo then undo() end
    error({err = 'ERR key ' .. KEYS[i] .. (field and (' field ' .. field) or '') ..
      ' holds ' .. string.format('%q', string.sub(v, 1, 40)) .. ' where dmq keeps a count;' ..
      ' nothing was changed. It was not written by dmq: delete it'})
  end
end

-- Priority (0 to 9), deliveries, strikes and whether it runs isolated, from a meta
-- value (defaults when there is none, or it does not parse).
local function parse_meta(m, default_priority)
  if not m then return default_priority, 0, 0, false end
  local p, d, s, i = string.match(m, '^(%d):(%d+)/?(%d*)(i?):')
  if not p then return default_priority, 0, 0, false end
  return tonumber(p), tonumber(d), tonumber(s) or 0, i == 'i'
end

-- A meta value; `token` nil or '' for a job that is not leased.
local function make_meta(p, d, s, isolated, token)
  local m = p .. ':' .. d
  if s > 0 or isolated then m = m .. '/' .. s .. (isolated and 'i' or '') end
  return m .. ':' .. (token or '')
end

-- The token in a meta value ('' when the job is not leased).
local function token_of(m)
  return string.match(m, '^%d+:%d+/?%d*i?:(.*)$') or ''
end

-- Whether `token` holds the lease on job `id`. Every change that ends or moves a
-- lease rewrites or deletes the meta, so the token alone decides. Returns the meta.
local function holds(meta_key, id, token)
  local m = redis.call('HGET', meta_key, id)
  if not m or token == '' or token_of(m) ~= token then return nil end
  return m
end

-- Runs redis.call(cmd, key, <fixed...>, items...) in chunks small enough for unpack.
local function each_chunk(cmd, key, items, step)
  step = step or 1
  local chunk = 4000 - (4000 % step)
  for i = 1, #items, chunk do
    redis.call(cmd, key, unpack(items, i, math.min(i + chunk - 1, #items)))
  end
end

-- HMGET of many fields of hash KEYS[i], in chunks; returns one value (or false) per
-- field. Fails, naming the key, when it is no hash (see `checked`).
local function hmget(i, fields)
  local out = {}
  for f = 1, #fields, 4000 do
    local part = checked(redis.pcall('HMGET', KEYS[i], unpack(fields, f,
      math.min(f + 3999, #fields))), nil, 'hash', i)
    if f == 1 then out = part else for _, v in ipairs(part) do out[#out + 1] = v end end
  end
  return out
end

-- Pushes a dead letter "<ms>|<id>|<reason>", its payload kept in a hash under
-- "<ms>|<id>" (an id dead-lettered twice keeps both), and drops the oldest beyond
-- `cap`, counting them.
local function bury(dead_key, dead_payloads_key, dropped_key, id, payload, reason, at_ms, cap)
  redis.call('LPUSH', dead_key, at_ms .. '|' .. id .. '|' .. reason)
  redis.call('HSET', dead_payloads_key, at_ms .. '|' .. id, payload)
  while redis.call('LLEN', dead_key) > cap do
    local dropped = redis.call('RPOP', dead_key)
    local old = string.match(dropped, '^(%d+|[^|]*)|')
    if old then redis.call('HDEL', dead_payloads_key, old) end
    redis.call('INCR', dropped_key)
  end
end

-- Wakes one blocked claimer of a queue, unless a wake-up is already waiting.
local function signal(signal_key)
  if redis.call('LLEN', signal_key) == 0 then redis.call('LPUSH', signal_key, '1') end
end

-- The KEYS layout of the claim, reap and doctor scripts: 1 payloads, 2 meta,
-- 3 delayed, 4 in-flight, 5..14 ready lists, 15 dead, 16 dead payloads,
-- 17 dead-dropped, 18 signal, 19 suspect list, 20 bad-entries counter, 21 gates hash,
-- 22 gated zset, 23 gates-due zset.
local function expect_queue_keys()
  expect('hash', 1, 2)
  expect_counter(2, '~seq')
  expect('zset', 3, 4)
  expect('list', 5, 15)
  expect('hash', 16)
  expect_counter(17)
  expect('list', 18, 19)
  expect_counter(20)
  expect('hash', 21)
  expect('zset', 22, 23)
end

-- Gates (flow limits; see the gates, gated and gates-due keys in keys.rs). A queue
-- whose jobs ever had a gate has the field ~gates in its meta hash: the scripts of
-- other queues look no further.

-- The gated-zset member of job `id` (of priority `p`) waiting in group `group`, the
-- `seq`th job to join a group: after its group's jobs of higher priority, and of
-- its own priority that joined before it.
local function group_member(group, p, seq, id)
  return 'g' .. group .. '\0' .. (9 - tonumber(p)) .. string.format('%015d', seq) .. '\0' .. id
end

-- The lexical range of gate `g`'s members of kind `kind` ('w' waiting, 'r' running)
-- in the gated zset.
local function gate_range(kind, g)
  return '[' .. kind .. g .. '\0', '(' .. kind .. g .. '\1'
end

-- The gates of jobs `ids` (false for a job with none), read from hash KEYS[gates];
-- proves the gate keys KEYS[gates], KEYS[gates + 1] (gated) and KEYS[gates + 2] (due),
-- so that `free_slots` can write them. `undo` as in `checked`.
local function gates_of(ids, gates, undo)
  local fields = {}
  for i, id in ipairs(ids) do fields[i] = 'j:' .. id end
  local out = {}
  for f = 1, #fields, 4000 do
    local part = checked(redis.pcall('HMGET', KEYS[gates], unpack(fields, f,
      math.min(f + 3999, #fields))), undo, 'hash', gates)
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  checked(redis.pcall('ZCARD', KEYS[gates + 1]), undo, 'zset', gates + 1)
  checked(redis.pcall('ZCARD', KEYS[gates + 2]), undo, 'zset', gates + 2)
  return out
end

-- Frees the slots jobs `ids` held at their gates (`names`, from gates_of), and
-- forgets their gates and groups too when `forget` (the job is gone). A gate that was full and
-- has jobs waiting opens (score 0 in the due set) and a claimer blocked on the queue's
-- signal list KEYS[signal] is woken.
local function free_slots(ids, names, forget, gates, signal_key)
  local wake = false
  for i, g in ipairs(names) do
    if forget then
      if g then
        redis.call('HDEL', KEYS[gates], 'j:' .. ids[i], 'g:' .. ids[i])
      else
        redis.call('HDEL', KEYS[gates], 'g:' .. ids[i])
      end
    end
    if g then
      redis.call('ZREM', KEYS[gates + 1], 'r' .. g .. '\0' .. ids[i])
      local lo, hi = gate_range('w', g)
      if redis.call('ZSCORE', KEYS[gates + 2], g) == 'inf' and
          #redis.call('ZRANGEBYLEX', KEYS[gates + 1], lo, hi, 'LIMIT', 0, 1) > 0 then
        redis.call('ZADD', KEYS[gates + 2], 0, g)
        wake = true
      end
    end
  end
  if wake then signal(signal_key) end
end

-- Takes the in-flight jobs `ids` (with their `metas`) off their leases, into the
-- queue's suspect list, whose jobs are claimed one at a time by a worker that runs
-- nothing else beside them: a job that crashes its worker then takes no other job
-- with it. A job that was running alone when its lease was lost gets a strike, and
-- once it has `max_deliveries` strikes (0: no limit) it goes to the dead-letter list
-- as a poison pill instead. Uses the claim/reap KEYS layout (expect_queue_keys).
-- Returns how many jobs it moved.
local function give_back(ids, metas, why, now, max_deliveries, dead_cap)
  if #ids == 0 then return 0 end
  each_chunk('ZREM', KEYS[4], ids)
  for i, id in ipairs(ids) do
    local p, d, s, isolated = parse_meta(metas[i], 5)
    if isolated then s = s + 1 end
    if isolated and max_deliveries > 0 and s >= max_deliveries then
      local payload = redis.call('HGET', KEYS[1], id) or ''
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[21], 'j:' .. id, 'g:' .. id)
      local reason = 'poison: its worker was lost ' .. s .. ' times while it ran alone (' ..
        why .. '; ' .. d .. ' deliveries); it may crash or hang its worker'
      bury(KEYS[15], KEYS[16], KEYS[17], id, payload, reason, now, dead_cap)
    else
      redis.call('HSET', KEYS[2], id, make_meta(p, d, s, false))
      redis.call('RPUSH', KEYS[19], id)
    end
  end
  signal(KEYS[18])
  return #ids
end
