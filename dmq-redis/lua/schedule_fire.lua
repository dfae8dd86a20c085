-- Claims one fire time of a periodic schedule: only a fire time later than the last
-- one claimed is granted, so of any number of schedulers exactly one wins each tick.
-- KEYS: 1 schedules hash (name -> "since:last:next", Unix ms, 0 for none)
-- ARGV: 1 name, 2 fire time (Unix ms), 3 next fire time (Unix ms, 0 for none)
-- Returns: 1 when claimed, 0 when that fire time (or a later one) was claimed already
local state = redis.call('HGET', KEYS[1], ARGV[1])
local since, last = 0, 0
if state then
  local s, l = string.match(state, '^(%d+):(%d+):')
  since, last = tonumber(s) or 0, tonumber(l) or 0
end
local fire = tonumber(ARGV[2])
if fire <= last then return 0 end
if since == 0 then since = now_ms() end
-- %d, not .., which writes large numbers in scientific notation.
local next_fire = tonumber(ARGV[3]) or 0
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d', since, fire, next_fire))
return 1
