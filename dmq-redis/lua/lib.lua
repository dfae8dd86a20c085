-- Shared helpers, prepended to every script when it is loaded (see src/scripts.rs).

-- Redis's own clock, in Unix milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether `token` still holds the lease on job `id`: it is in flight and its meta
-- ("priority:deliveries:token") ends with that token. Returns the meta when it does.
local function holds(meta_key, in_flight_key, id, token)
  local m = redis.call('HGET', meta_key, id)
  if not m or redis.call('ZSCORE', in_flight_key, id) == false then return nil end
  if string.match(m, ':([^:]*)$') ~= token then return nil end
  return m
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

