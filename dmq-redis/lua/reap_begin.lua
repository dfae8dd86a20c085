-- Starts a reap: takes the reaper lock unless another reaper holds it, and lists the
-- workers whose heartbeat lapsed.
-- KEYS: 1 reaper lock, 2 workers zset, 3 workers' info hash
-- ARGV: 1 this reaper's id, 2 lock ttl (ms)
-- Returns: false when another reaper holds the lock, else {dead id1, info1, id2, ...}
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms())) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
end
return out
