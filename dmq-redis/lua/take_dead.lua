-- Removes the newest dead letter of one job and returns it.
-- KEYS: 1 dead list, 2 dead payloads hash
-- ARGV: 1 job id
-- Returns: {entry "<Unix ms>|<id>|<reason>", payload}, or false when there is none
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local prefix = '|' .. ARGV[1] .. '|'
for _, entry in ipairs(entries) do
  local at = string.match(entry, '^(%d+)|')
  if at and string.sub(entry, #at + 1, #at + #prefix) == prefix then
    redis.call('LREM', KEYS[1], 1, entry)
    local field = at .. '|' .. ARGV[1]
    local payload = redis.call('HGET', KEYS[2], field) or ''
    redis.call('HDEL', KEYS[2], field)
    return {entry, payload}
  end
end
return false
