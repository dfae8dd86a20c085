-- Gives back n enqueues counted by quota_take whose jobs were then refused, to each
-- counter whose window is still open.
-- KEYS: the counters (the namespace's, then the key's)
-- ARGV: 1 n
-- Returns: how many counters it changed
local changed = 0
for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'string' and redis.call('PTTL', key) > 0 then
    local left = redis.call('DECRBY', key, ARGV[1])
    if left < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    changed = changed + 1
  end
end
return changed
