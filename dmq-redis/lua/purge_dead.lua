-- Empties a queue's dead-letter list and its payloads; the dropped counter is kept.
-- KEYS: 1 dead list, 2 dead payloads hash
-- ARGV: none
-- Returns: how many letters it removed
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return n
