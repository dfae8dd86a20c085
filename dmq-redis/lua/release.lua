-- Returns a leased job to the front of its ready list at once (a suspect job that was
-- to run alone: to the front of the suspect list, with no strike), if the caller's
-- token still holds the lease, and wakes a blocked claimer.
-- The job frees its slot at its gate, if it passed one (it passes the gate again when
-- it is claimed again).
-- KEYS: 1 meta hash, 2 in-flight zset, 3 signal list, 4..13 ready lists (priority 0..9),
--       14 suspect list, 15 gates hash, 16 gated zset, 17 gates-due zset
-- ARGV: 1 id, 2 token
-- Returns: 1 when released, 0 when the lease is no longer the caller's (nothing changed)
expect('hash', 1)
expect('zset', 2)
expect('list', 3, 14)
local m = holds(KEYS[1], ARGV[1], ARGV[2])
if not m then return 0 end
local names = redis.call('HEXISTS', KEYS[1], '~gates') == 1 and gates_of({ARGV[1]}, 15)
-- A release is a settle, not a lost delivery: it counts as neither.
local p, d, s, isolated = parse_meta(m, 5)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], make_meta(p, math.max(d - 1, 0), s, false))
if isolated then
  redis.call('LPUSH', KEYS[14], ARGV[1])
else
  redis.call('LPUSH', KEYS[4 + p], ARGV[1])
end
if names then free_slots({ARGV[1]}, names, false, 15, KEYS[3]) end
signal(KEYS[3])
return 1
