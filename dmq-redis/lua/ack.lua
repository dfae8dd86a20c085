-- Settles jobs of one queue as done, forgetting each whose lease the caller's token
-- still holds; the others are left as they are.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset
-- ARGV: id1, token1, id2, token2, ...
-- Returns: one integer per job: 1 when acknowledged, 0 when the lease is no longer
-- the caller's (nothing changed for that job)
local ids = {}
for i = 1, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local metas = hmget(KEYS[2], ids)
local done, out = {}, {}
for i, id in ipairs(ids) do
  local token = ARGV[2 * i]
  if metas[i] and token ~= '' and token_of(metas[i]) == token then
    done[#done + 1] = id
    out[i] = 1
  else
    out[i] = 0
  end
end
if #done > 0 then
  each_chunk('ZREM', KEYS[3], done)
  each_chunk('HDEL', KEYS[1], done)
  each_chunk('HDEL', KEYS[2], done)
end
return out
