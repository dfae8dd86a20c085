-- Gives back what a claim took when its caller never learned what it got (the
-- connection broke before the reply came): each in-flight job of one queue whose
-- token carries the claim's tag and worker goes back as a release does, to the front
-- of its ready list (a suspect job to the front of the suspect list), with neither a
-- delivery nor a strike counted.
-- KEYS: 1 meta hash, 2 in-flight zset, 3 signal list, 4..13 ready lists (priority 0..9),
--       14 suspect list (the release script's layout)
-- ARGV: 1 worker id, 2 claim tag
-- Returns: how many jobs it gave back
expect('hash', 1)
expect('zset', 2)
expect('list', 3, 14)
local marker = '.' .. ARGV[2] .. '@' .. ARGV[1]
local held = redis.call('ZRANGE', KEYS[2], 0, -1)
local metas = hmget(1, held)
local given = 0
-- Backwards, so that after the LPUSHes the claim's first job is at the front again.
for i = #held, 1, -1 do
  local m = metas[i]
  local token = m and token_of(m) or ''
  if #token > #marker and string.sub(token, -#marker) == marker then
    local id = held[i]
    local p, d, s, isolated = parse_meta(m, 5)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', KEYS[1], id, make_meta(p, math.max(d - 1, 0), s, false))
    if isolated then
      redis.call('LPUSH', KEYS[14], id)
    else
      redis.call('LPUSH', KEYS[4 + p], id)
    end
    given = given + 1
  end
end
if given > 0 then signal(KEYS[3]) end
return given
