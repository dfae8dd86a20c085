-- Takes back one queue's in-flight jobs whose lease expired or whose worker is dead:
-- each goes to the queue's suspect list, to be claimed alone, or, once its worker was
-- lost max-deliveries times while it ran alone, to the dead-letter list as a poison
-- pill (see give_back).
-- KEYS: 1 payloads hash, 2 meta hash, 3 delayed zset, 4 in-flight zset,
--       5..14 ready lists (priority 0..9), 15 dead list, 16 dead payloads hash,
--       17 dead-dropped counter, 18 signal list, 19 suspect list, 20 bad-entries
--       counter (the claim script's layout)
-- ARGV: 1 max deliveries (0 for no limit), 2 dead-letter cap, then per dead worker:
--       its id and its heartbeat ttl (ms). A claim is a sign of life too: only the
--       jobs it claimed at least a ttl ago are taken back, so a worker that lapsed but
--       came back (it stalled) keeps what it claimed since.
-- Returns: {moved, id1, id2, ...}: how many jobs it moved, then the dead workers
--          that still hold a job here (claimed within their ttl), not to be forgotten
expect_queue_keys()
local now = now_ms()
local max_deliveries, dead_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 10000)
local moved = give_back(expired, hmget(2, expired), 'lease expired', now, max_deliveries, dead_cap)
if #ARGV < 3 then return {moved} end
local dead = {}
for i = 3, #ARGV, 2 do dead[ARGV[i]] = tonumber(ARGV[i + 1]) end
local held = redis.call('ZRANGE', KEYS[4], 0, -1)
local metas = hmget(2, held)
local lost, lost_metas = {}, {}
local still_holding, out = {}, {}
for i, id in ipairs(held) do
  local claimed_at, worker
  if metas[i] then claimed_at, worker = string.match(token_of(metas[i]), '^%d+%.%d+%.(%d+)[^@]*@(.*)$') end
  if worker and dead[worker] then
    if tonumber(claimed_at) + dead[worker] <= now then
      lost[#lost + 1] = id
      lost_metas[#lost_metas + 1] = metas[i]
    elseif not still_holding[worker] then
      still_holding[worker] = true
      out[#out + 1] = worker
    end
  end
end
moved = moved + give_back(lost, lost_metas, 'its worker stopped heartbeating', now, max_deliveries, dead_cap)
table.insert(out, 1, moved)
return out
