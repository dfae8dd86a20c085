-- Settles jobs of one queue as done, forgetting each whose lease the caller's token
-- still holds; the others are left as they are. A job acknowledged with a completion
-- time (exactly-once) also has its completion recorded, in this same step, until then;
-- completions whose time is up are dropped when one is recorded.
-- A job that passed a gate (flow limits) frees its slot there and forgets its gate;
-- a full gate with jobs waiting then opens, and a blocked claimer is woken.
-- KEYS: 1 payloads hash, 2 meta hash, 3 in-flight zset, 4 completed zset, 5 gates
--       hash, 6 gated zset, 7 gates-due zset, 8 signal list
-- ARGV: id1, token1, remember1 (ms; 0 records nothing), id2, token2, remember2, ...
-- Returns: one character per job, in one string: 1 when acknowledged, 0 when the lease
-- is no longer the caller's (nothing changed for that job, nothing recorded)
-- A key of the wrong type fails the script before it changes anything: the reads
-- (meta, payloads, and the completed set when it is written) come first, and the
-- first write (the in-flight set's) fails before it changes anything.
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
ids[#ids + 1] = '~gates'
local metas = hmget(2, ids)
local gated_queue = metas[#metas] ~= false
ids[#ids], metas[#metas] = nil, nil
checked(redis.pcall('HLEN', KEYS[1]), nil, 'hash', 1)
local done, out = {}, {}
local completed = {}
for i, id in ipairs(ids) do
  local token = ARGV[3 * i - 1]
  if metas[i] and token ~= '' and token_of(metas[i]) == token then
    done[#done + 1] = id
    out[i] = '1'
    local remember = tonumber(ARGV[3 * i])
    if remember and remember > 0 then
      completed[#completed + 1] = {id, remember}
    end
  else
    out[i] = '0'
  end
end
if #completed > 0 then checked(redis.pcall('ZCARD', KEYS[4]), nil, 'zset', 4) end
local names
if gated_queue and #done > 0 then
  names = gates_of(done, 5)
  checked(redis.pcall('LLEN', KEYS[8]), nil, 'list', 8)
end
if #done > 0 then
  for f = 1, #done, 4000 do
    -- The first chunk proves the set for the rest.
    checked(redis.pcall('ZREM', KEYS[3], unpack(done, f, math.min(f + 3999, #done))),
      nil, 'zset', 3)
  end
  each_chunk('HDEL', KEYS[1], done)
  each_chunk('HDEL', KEYS[2], done)
  if names then free_slots(done, names, true, 5, KEYS[8]) end
end
if #completed > 0 then
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, c in ipairs(completed) do
    redis.call('ZADD', KEYS[4], now + c[2], c[1])
  end
end
return table.concat(out)
