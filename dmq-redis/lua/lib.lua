-- Shared helpers, prepended to every script when it is loaded (see src/scripts.rs).
--
-- A job's meta ("priority:deliveries:token") is in the queue's meta hash while it is
-- delayed, in flight or back in ready after a lost lease; a job enqueued ready has
-- none (priority from its list, no deliveries). A lease token is
-- "<seq>.<n>.<claimed at, Unix ms>@<worker>".

-- Redis's own clock, in Unix milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Priority and deliveries from a meta value (defaults when there is none).
local function parse_meta(m, default_priority)
  if not m then return default_priority, 0 end
  local p, d = string.match(m, '^(%d+):(%d+):')
  return tonumber(p) or default_priority, tonumber(d) or 0
end

-- The token in a meta value ('' when the job is not leased).
local function token_of(m)
  return string.match(m, '^%d+:%d+:(.*)$') or ''
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

-- HMGET of many fields, in chunks; returns one value (or false) per field.
local function hmget(key, fields)
  if #fields == 0 then return {} end
  if #fields <= 4000 then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 3999, #fields)))
    for _, v in ipairs(part) do out[#out + 1] = v end
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

-- Takes the in-flight jobs `ids` (with their `metas`) off their leases: back to the
-- front of their ready list, or, once delivered `max_deliveries` times (0: no limit),
-- to the dead-letter list as a poison pill. Uses the claim/reap KEYS layout:
-- 1 payloads, 2 meta, 4 in-flight, 5..14 ready lists, 15 dead, 16 dead payloads,
-- 17 dead-dropped, 18 signal. Returns how many jobs it moved.
local function give_back(ids, metas, why, now, max_deliveries, dead_cap)
  if #ids == 0 then return 0 end
  each_chunk('ZREM', KEYS[4], ids)
  local moved = 0
  -- Backwards, so that after the LPUSHes the longest-waiting job is at the front.
  for i = #ids, 1, -1 do
    local id = ids[i]
    local p, d = parse_meta(metas[i], 5)
    if max_deliveries > 0 and d >= max_deliveries then
      local payload = redis.call('HGET', KEYS[1], id) or ''
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      local reason = 'poison: delivered ' .. d .. ' times and never settled (' .. why ..
        '); it may crash or hang its worker'
      bury(KEYS[15], KEYS[16], KEYS[17], id, payload, reason, now, dead_cap)
    else
      redis.call('HSET', KEYS[2], id, p .. ':' .. d .. ':')
      redis.call('LPUSH', KEYS[5 + p], id)
    end
    moved = moved + 1
  end
  signal(KEYS[18])
  return moved
end

