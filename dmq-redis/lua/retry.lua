-- Puts a leased job back with a new payload, due at an eta, if the caller's token
-- still holds the lease. Its delivery count and strikes start again: the run failed,
-- it did not crash its worker. Wakes a blocked claimer,
-- which then times its wait to the new eta.
-- The job frees its slot at its gate, if it passed one (it passes the gate again when
-- it comes due).
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 delayed zset, 5 signal list,
--       6 gates hash, 7 gated zset, 8 gates-due zset
-- ARGV: 1 id, 2 token, 3 new payload, 4 eta (Unix ms)
-- Returns: 1 when done, 0 when the lease is no longer the caller's (nothing changed)
expect('hash', 1, 2)
expect('zset', 3, 4)
expect('list', 5)
local m = holds(KEYS[2], ARGV[1], ARGV[2])
if not m then return 0 end
local names = redis.call('HEXISTS', KEYS[2], '~gates') == 1 and gates_of({ARGV[1]}, 6)
local p = parse_meta(m, 5)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], p .. ':0:')
redis.call('ZADD', KEYS[4], tonumber(ARGV[4]), ARGV[1])
if names then free_slots({ARGV[1]}, names, false, 6, KEYS[5]) end
signal(KEYS[5])
return 1
