-- Whether a completion of a job is recorded and not yet forgotten.
-- KEYS: 1 completed zset
-- ARGV: 1 id
-- Returns: 1 when recorded, 0 when not
local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
if until_ms and tonumber(until_ms) > now_ms() then return 1 end
return 0
