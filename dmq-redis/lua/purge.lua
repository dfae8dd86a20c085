-- Empties a queue of its waiting jobs: ready, suspect, held at gates, waiting in
-- groups and delayed, with
-- their payloads and metas. Jobs in flight stay (their workers settle them), and so do
-- dead letters and the gates' limits, rate state and running slots.
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4..13 ready lists (priority 0..9),
--       14 suspect list, 15 gates hash, 16 gated zset, 17 gates-due zset
-- ARGV: none
-- Returns: how many jobs it removed
expect('hash', 1, 2)
expect('zset', 3)
expect('list', 4, 14)
expect('hash', 15)
expect('zset', 16, 17)
local ids = {}
for i = 4, 14 do
  for _, id in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do ids[#ids + 1] = id end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do ids[#ids + 1] = id end
for _, range in ipairs({{'[w', '(x'}, {'[g', '(h'}}) do
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[16], range[1], range[2])) do
    ids[#ids + 1] = string.match(m, '%z([^%z]*)$')
  end
end
if #ids > 0 then
  each_chunk('HDEL', KEYS[1], ids)
  each_chunk('HDEL', KEYS[2], ids)
  local fields = {}
  for i, id in ipairs(ids) do fields[2 * i - 1], fields[2 * i] = 'j:' .. id, 'g:' .. id end
  each_chunk('HDEL', KEYS[15], fields)
end
redis.call('ZREMRANGEBYLEX', KEYS[16], '[w', '(x')
redis.call('ZREMRANGEBYLEX', KEYS[16], '[g', '(h')
redis.call('DEL', KEYS[17])
redis.call('DEL', KEYS[3], unpack(KEYS, 4, 14))
return #ids
