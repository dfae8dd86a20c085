-- Drops entries a claim handed out that the worker found to be no task id of dmq's
-- (characters other than lowercase hex digits), or a second copy of a job within one
-- claim, and counts them as bad entries: each lease the caller's token still holds is
-- taken back, and an entry that is no task id loses its leftovers. A copy's token
-- holds nothing, so only the count changes for it.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 bad-entries counter
-- ARGV: 1 how many bad entries to count, then per entry to take back: id, token
-- Returns: how many leases it took back
expect('hash', 1, 2)
expect('zset', 3)
expect_counter(4)
local taken = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if holds(KEYS[2], id, ARGV[i + 1]) then
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[1], id)
    taken = taken + 1
  end
end
redis.call('INCRBY', KEYS[4], tonumber(ARGV[1]))
return taken
