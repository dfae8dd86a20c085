-- Moves a leased job to the queue's capped dead-letter list with a reason, if the
-- caller's token still holds the lease. Entries beyond the cap are dropped and counted.
-- The job frees its slot at its gate, if it passed one, and forgets the gate.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 dead list, 5 dead payloads hash,
--       6 dropped counter, 7 gates hash, 8 gated zset, 9 gates-due zset, 10 signal list
-- ARGV: 1 id, 2 token, 3 reason, 4 cap
-- Returns: 1 when dead-lettered, 0 when the lease is no longer the caller's (nothing changed)
-- A dead-list entry is "<Unix ms>|<id>|<reason>"; its payload is in the dead payloads hash.
expect('hash', 1, 2)
expect('zset', 3)
expect('list', 4)
expect('hash', 5)
expect_counter(6)
if not holds(KEYS[2], ARGV[1], ARGV[2]) then return 0 end
local names = redis.call('HEXISTS', KEYS[2], '~gates') == 1 and gates_of({ARGV[1]}, 7)
if names then expect('list', 10) end
local payload = redis.call('HGET', KEYS[1], ARGV[1]) or ''
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
bury(KEYS[4], KEYS[5], KEYS[6], ARGV[1], payload, ARGV[3], now_ms(), tonumber(ARGV[4]))
if names then free_slots({ARGV[1]}, names, true, 7, KEYS[10]) end
return 1
