-- Registers a periodic schedule if it is new (since = now, Redis's clock) and records
-- its next fire time when one is given.
-- KEYS: 1 schedules hash (name -> "since:last:next", Unix ms, 0 for none)
-- ARGV: 1 name, 2 next fire (Unix ms; 0 leaves it as it is)
-- Returns: {since, last, next}
local state = redis.call('HGET', KEYS[1], ARGV[1])
local since, last, next_fire = 0, 0, 0
if state then
  local s, l, n = string.match(state, '^(%d+):(%d+):(%d+)$')
  since, last, next_fire = tonumber(s) or 0, tonumber(l) or 0, tonumber(n) or 0
end
if since == 0 then since = now_ms() end
local given = tonumber(ARGV[2]) or 0
if given > 0 then next_fire = given end
-- %d, not .., which writes large numbers in scientific notation.
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d', since, last, next_fire))
return {since, last, next_fire}
