-- Finds the jobs of one queue whose envelope is stored but which are in no list or
-- set (ready, suspect, delayed, in flight, held back at a gate, or waiting in a
-- group), so that nothing
-- would ever run them, and
-- with ARGV[1] = 1 puts them back at the front of their ready list. First compares
-- counts, which costs a few commands: only when more envelopes are stored than places
-- hold ids does it read every list and set (a pass over the whole queue).
-- KEYS: the claim script's layout (expect_queue_keys): 1 payloads, 2 meta, 3 delayed,
--       4 in-flight, 5..14 ready lists, 15 dead, 16 dead payloads, 17 dead-dropped,
--       18 signal, 19 suspect, 20 bad-entries counter, 21 gates, 22 gated, 23 gates due
-- ARGV: 1 fix (1) or only report (0)
-- Returns: {stored, placed, suspect, bad entries dropped so far, stranded id1, ...}:
--          how many envelopes are stored, how many ids the lists and sets hold, how
--          many jobs wait in the suspect list, the bad-entries count, then the
--          stranded ids (put back when fixing)
expect_queue_keys()
local stored = redis.call('HLEN', KEYS[1])
local suspect = redis.call('LLEN', KEYS[19])
local placed = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + suspect
for i = 5, 14 do placed = placed + redis.call('LLEN', KEYS[i]) end
placed = placed + redis.call('ZLEXCOUNT', KEYS[22], '[w', '(x')
  + redis.call('ZLEXCOUNT', KEYS[22], '[g', '(h')
local out = {stored, placed, suspect, tonumber(redis.call('GET', KEYS[20]) or '0')}
if stored <= placed then return out end

local seen = {}
local lists = {19}
for i = 5, 14 do lists[#lists + 1] = i end
for _, k in ipairs(lists) do
  for _, id in ipairs(redis.call('LRANGE', KEYS[k], 0, -1)) do seen[id] = true end
end
for _, k in ipairs({3, 4}) do
  for _, id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do seen[id] = true end
end
for _, range in ipairs({{'[w', '(x'}, {'[g', '(h'}}) do
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[22], range[1], range[2])) do
    local id = string.match(m, '%z([^%z]*)$')
    if id then seen[id] = true end
  end
end
local stranded = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not seen[id] then stranded[#stranded + 1] = id end
end
if ARGV[1] == '1' and #stranded > 0 then
  local metas = hmget(2, stranded)
  for i = #stranded, 1, -1 do
    local p, d, s = parse_meta(metas[i], 5)
    redis.call('HSET', KEYS[2], stranded[i], make_meta(p, d, s, false))
    redis.call('LPUSH', KEYS[5 + p], stranded[i])
  end
  signal(KEYS[18])
end
for _, id in ipairs(stranded) do out[#out + 1] = id end
return out
