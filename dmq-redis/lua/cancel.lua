-- Cancels one job that has not started: a job waiting in a ready list, the suspect list
-- or the delayed set (or stored but waiting nowhere, stranded) is removed from wherever
-- it waits, with its payload and meta. A job in flight (in the in-flight set, or whose
-- meta carries a lease token) is left as it is, and so is everything when the queue
-- holds no payload of the id (finished, dead-lettered, never there). Every key's type
-- is checked before anything changes. Removing a ready job reads its queue's ready
-- lists (LREM), as finding one does.
-- A job held back at its gate is found among its gate's waiting jobs, one waiting in
-- its group among its group's.
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset,
--       5..14 ready lists (priority 0..9), 15 suspect list, 16 gates hash, 17 gated zset
-- ARGV: 1 job id
-- Returns: {'removed', payload}, {'running'} or {'not_found'} (nothing changed but
-- for 'removed')
expect('hash', 1, 2)
expect('zset', 3, 4)
expect('list', 5, 15)
expect('hash', 16)
expect('zset', 17)
local id = ARGV[1]
local meta = redis.call('HGET', KEYS[2], id)
if redis.call('ZSCORE', KEYS[4], id) or (meta and token_of(meta) ~= '') then
  return {'running'}
end
local payload = redis.call('HGET', KEYS[1], id)
if not payload then return {'not_found'} end
if redis.call('ZREM', KEYS[3], id) == 0 then
  for i = 5, 15 do redis.call('LREM', KEYS[i], 0, id) end
end
local g = redis.call('HGET', KEYS[16], 'j:' .. id)
if g then
  local lo, hi = gate_range('w', g)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[17], lo, hi)) do
    if string.sub(m, -#id - 1) == '\0' .. id then redis.call('ZREM', KEYS[17], m) end
  end
  redis.call('HDEL', KEYS[16], 'j:' .. id)
end
local group = redis.call('HGET', KEYS[16], 'g:' .. id)
if group then
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[17], '[g' .. group .. '\0',
      '(g' .. group .. '\1')) do
    if string.sub(m, -#id - 1) == '\0' .. id then redis.call('ZREM', KEYS[17], m) end
  end
  redis.call('HDEL', KEYS[16], 'g:' .. id)
end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
return {'removed', payload}
