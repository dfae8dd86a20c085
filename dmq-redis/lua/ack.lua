-- Settles jobs of one queue as done, forgetting each whose lease the caller's token
-- still holds; the others are left as they are. A job acknowledged with a completion
-- time (exactly-once) also has its completion recorded, in this same step, until then;
-- completions whose time is up are dropped when one is recorded.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 completed zset
-- ARGV: id1, token1, remember1 (ms; 0 records nothing), id2, token2, remember2, ...
-- Returns: one integer per job: 1 when acknowledged, 0 when the lease is no longer
-- the caller's (nothing changed for that job, nothing recorded)
expect('hash', 1, 2)
expect('zset', 3, 4)
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local metas = hmget(KEYS[2], ids)
local done, out = {}, {}
local completed = {}
for i, id in ipairs(ids) do
  local token = ARGV[3 * i - 1]
  if metas[i] and token ~= '' and token_of(metas[i]) == token then
    done[#done + 1] = id
    out[i] = 1
    local remember = tonumber(ARGV[3 * i])
    if remember and remember > 0 then
      completed[#completed + 1] = {id, remember}
    end
  else
    out[i] = 0
  end
end
if #done > 0 then
  each_chunk('ZREM', KEYS[3], done)
  each_chunk('HDEL', KEYS[1], done)
  each_chunk('HDEL', KEYS[2], done)
end
if #completed > 0 then
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, c in ipairs(completed) do
    redis.call('ZADD', KEYS[4], now + c[2], c[1])
  end
end
return out
