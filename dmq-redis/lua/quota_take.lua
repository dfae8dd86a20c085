-- Counts n enqueues against the namespace's quota and, with a key, that key's quota:
-- all of them, or (when one has fewer than n left in its window) none. A quota's
-- window opens with the first enqueue it counts and lasts its period (the counter's
-- expiry). A quota that is not set counts nothing.
-- KEYS: 1 quotas hash, 2 the namespace's counter, 3 the key's counter (with a key)
-- ARGV: 1 n, 2 the key's field in the quotas hash ('k:<key>'; absent without a key)
-- Returns: {0, 0} when counted; {i, ms} when quota i (1 the namespace's, 2 the key's)
--          is used up, with how long until its window ends
-- The reads come first: a key of the wrong type fails the script before it counts.
local n = tonumber(ARGV[1])
local fields = {'*', ARGV[2]}
local limits = checked(redis.pcall('HMGET', KEYS[1], unpack(fields)), nil, 'hash', 1)
local counted = {}
for i = 1, #fields do
  local count, period = string.match(limits[i] or '', '^(%d+):(%d+)$')
  if count then
    local used = tonumber(checked(redis.pcall('GET', KEYS[1 + i]), nil, 'string', 1 + i) or '0')
    if (used or 0) + n > tonumber(count) then
      local ttl = redis.call('PTTL', KEYS[1 + i])
      if ttl < 0 then ttl = tonumber(period) end
      return {i, ttl}
    end
    counted[#counted + 1] = {KEYS[1 + i], period}
  end
end
for _, c in ipairs(counted) do
  if redis.call('INCRBY', c[1], n) == n then redis.call('PEXPIRE', c[1], c[2]) end
end
return {0, 0}
