-- Returns a leased job to the front of its ready list at once, if the caller's token
-- still holds the lease, and wakes a blocked claimer.
-- KEYS: 1 meta hash, 2 in-flight zset, 3 signal list, 4..13 ready lists (priority 0..9)
-- ARGV: 1 id, 2 token
-- Returns: 1 when released, 0 when the lease is no longer the caller's (nothing changed)
local m = holds(KEYS[1], ARGV[1], ARGV[2])
if not m then return 0 end
-- A release is a settle, not a lost delivery: it does not count toward the poison limit.
local p, d = parse_meta(m, 5)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], p .. ':' .. math.max(d - 1, 0) .. ':')
redis.call('LPUSH', KEYS[4 + p], ARGV[1])
signal(KEYS[3])
return 1
