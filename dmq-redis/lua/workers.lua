-- Lists the workers whose heartbeat has not lapsed.
-- KEYS: 1 workers zset, 2 workers' info hash
-- ARGV: none
-- Returns: {id1, lapses_at_ms1, info1, id2, ...}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return out
