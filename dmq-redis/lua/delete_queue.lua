-- Deletes queues whole: their ready, suspect and delayed jobs, their jobs in flight,
-- their dead letters and the count of letters the cap dropped, their completions, their
-- bad-entry count and wake-up, with every payload and meta. Refuses, changing nothing,
-- while any of them has a job in flight, unless forced: it counts everything first, and
-- deletes only then. Idempotency keys (a key each, found only by a scan) stay until their
-- ttl. The queue registry is left to the caller: it lives in a slot of its own.
-- KEYS: 24 per queue, queue n's from 24 * (n - 1) + 1: the claim/reap layout (see
--       expect_queue_keys: 1 payloads, 2 meta, 3 delayed, 4 in-flight, 5..14 ready lists,
--       15 dead, 16 dead payloads, 17 dead-dropped, 18 signal, 19 suspect, 20 bad-entries
--       counter, 21 gates, 22 gated, 23 gates due), then 24 the completed zset
-- ARGV: 1 force: 1 deletes the jobs in flight too, 0 refuses while there are any
-- Returns: {0, jobs in flight} when refused (nothing changed); else {1, waiting (ready
-- suspect and held at gates), delayed, dead letters, in flight}, added up over the queues
local per = 24
local waiting, delayed, dead, in_flight = 0, 0, 0, 0
for b = 0, #KEYS - per, per do
  expect('zset', b + 3, b + 4)
  expect('list', b + 5, b + 15)
  expect('list', b + 19)
  expect('zset', b + 22)
  waiting = waiting + redis.call('ZLEXCOUNT', KEYS[b + 22], '[w', '(x')
    + redis.call('ZLEXCOUNT', KEYS[b + 22], '[g', '(h')
  for i = b + 5, b + 14 do waiting = waiting + redis.call('LLEN', KEYS[i]) end
  waiting = waiting + redis.call('LLEN', KEYS[b + 19])
  delayed = delayed + redis.call('ZCARD', KEYS[b + 3])
  in_flight = in_flight + redis.call('ZCARD', KEYS[b + 4])
  dead = dead + redis.call('LLEN', KEYS[b + 15])
end
if in_flight > 0 and ARGV[1] ~= '1' then return {0, in_flight} end
for b = 0, #KEYS - per, per do
  redis.call('DEL', unpack(KEYS, b + 1, b + per))
end
return {1, waiting, delayed, dead, in_flight}
