"""A producer in another language, written from the documents alone.

Enqueues dmq jobs into Redis exactly as docs/wire-format.md ("Producing a job from
another language") and docs/redis-layout.md ("Enqueueing from another language")
say, waits for their results as docs/redis-layout.md ("Reading a result from
another language") says, and prints one line per job:

    <label> <state> <value as JSON, or the failure's kind and message>

It also enqueues three jobs with partition keys on the partitioned queue "pyp" (four
partitions), choosing each partition as docs/redis-layout.md says (FNV-1a-64 of the
key, mod 4), and prints "partition <key> <partition>" for each.

The worker is dmq-redis/tests/python_producer.rs, which runs this script:

    python producer.py REDIS_URL NAMESPACE
    python producer.py --cluster HOST:PORT,HOST:PORT NAMESPACE

With --cluster it speaks to a Redis Cluster through redis-py's RedisCluster and waits
for results with SSUBSCRIBE, as the documents say a producer on a cluster must.

It exits 0 once every result is in, 1 when some did not come within 60 s.
"""

import json
import re
import sys
import time
import uuid

import msgpack
import redis

QUEUE = "py"
PARTITIONED = "pyp"
PARTITIONS = 4
GATED = "pyg"
WAIT_S = 60

# docs/redis-layout.md, "Enqueueing from another language", word for word.
ENQUEUE = """
-- KEYS: 1 {<ns>:<q>}:jobs, 2 {<ns>:<q>}:meta, 3 {<ns>:<q>}:delayed,
--       4 {<ns>:<q>}:signal, 5 {<ns>:<q>}:ready:<p>, 6 {<ns>:<q>}:gates
-- ARGV: 1 id, 2 envelope (MessagePack), 3 priority, 4 due (Unix ms; 0 for now),
--       5 the job's gate ('' for a job without flow limits), 6 the gate's limits,
--       "<interval µs>:<burst>:<concurrency>" ('' without a gate)
-- Returns 1, or 0 when a job of this id is already queued (nothing changed).
-- Checks every key's type before it changes anything: Redis does not roll back a
-- script that fails halfway.
for i, kind in ipairs({'hash', 'hash', 'zset', 'list', 'list', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= kind and t ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[6], 'j:' .. ARGV[1], ARGV[5], 'c:' .. ARGV[5], ARGV[6])
  redis.call('HSET', KEYS[2], '~gates', '1')
end
local wake
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ':0:')
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  wake = true
else
  wake = redis.call('RPUSH', KEYS[5], ARGV[1]) == 1
end
if wake and redis.call('LLEN', KEYS[4]) == 0 then redis.call('LPUSH', KEYS[4], '1') end
return 1
"""


def now_ms():
    return int(time.time() * 1000)


def fnv1a64(text):
    """docs/redis-layout.md: the 64-bit FNV-1a hash of the key's UTF-8 bytes."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value ^= byte
        value = (value * 0x100000001B3) % (1 << 64)
    return value


def partition_of(queue, partitions, key):
    return "%s#%d" % (queue, fnv1a64(key) % partitions)


def crc16_xmodem(data):
    """docs/redis-layout.md: polynomial 0x1021, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def partition_tag(namespace, queue, p):
    """docs/redis-layout.md, a partition's steered hash tag, word for word."""
    offset = crc16_xmodem(("%s:%s" % (namespace, queue)).encode()) % 16384 // 16
    start = (int(format(p % 1024, "010b")[::-1], 2) + offset) % 1024 * 16
    k = 0
    while True:
        tag = "%s:%s#%d,%d" % (namespace, queue, p, k)
        if start <= crc16_xmodem(tag.encode()) % 16384 < start + 16:
            return tag
        k += 1


def hash_tag(namespace, queue):
    """The braces and what goes between them for the keys of `queue`."""
    base, _, number = queue.rpartition("#")
    if base and re.fullmatch("[0-9]+", number) and int(number) < 65536:
        return "{%s}" % partition_tag(namespace, base, int(number))
    return "{%s:%s}" % (namespace, queue)


def enqueue(r, namespace, task, args, priority=5, delay_ms=0, id_as_bytes=False, queue=QUEUE,
            gate="", limits=""):
    """Enqueues one job on `queue`; returns its id (lowercase hyphenated text)."""
    job = uuid.uuid4()
    job_id = str(job)
    envelope = {
        "version": 1,
        # docs/wire-format.md, "The task id": its text, or its 16 bytes as bin.
        "id": job.bytes if id_as_bytes else job_id,
        "task": task,
        "queue": queue,
        "args": msgpack.packb(args),
        "priority": priority,
        "created_at": now_ms(),
    }
    due_ms = 0
    if delay_ms:
        due_ms = now_ms() + delay_ms
        envelope["eta"] = due_ms
    payload = msgpack.packb(envelope, use_bin_type=True)
    tag = hash_tag(namespace, queue)
    keys = [tag + ":jobs", tag + ":meta", tag + ":delayed", tag + ":signal",
            "%s:ready:%d" % (tag, priority), tag + ":gates"]
    added = r.eval(ENQUEUE, len(keys), *keys, job_id, payload, priority, due_ms, gate, limits)
    r.sadd("{%s}:queues" % namespace, queue)  # once per queue is enough
    if added != 1:
        sys.exit("enqueueing %s refused: a job of id %s is already queued" % (task, job_id))
    return job_id


def wait_for_results(r, namespace, ids, cluster):
    """The outcome of each of `ids`, decoded, once all are stored (or the time is up)."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    channel = namespace + ":results"
    if cluster:
        # docs/redis-layout.md: on a cluster results are announced with SPUBLISH.
        pubsub.ssubscribe(channel)
        next_message = lambda: pubsub.get_sharded_message(timeout=1.0)
    else:
        pubsub.subscribe(channel)
        next_message = lambda: pubsub.get_message(timeout=1.0)
    outcomes = {}

    def read(job_ids):
        for job_id in job_ids:
            raw = r.get(namespace + ":result:" + job_id)
            if raw is not None:
                outcomes[job_id] = msgpack.unpackb(raw, raw=False)

    read(ids)
    deadline = time.monotonic() + WAIT_S
    while len(outcomes) < len(ids) and time.monotonic() < deadline:
        message = next_message()
        if message is None or message["type"] not in ("message", "smessage"):
            continue
        announced = message["data"].decode().split(",")
        read([i for i in announced if i in ids and i not in outcomes])
    pubsub.close()
    return outcomes


def describe(outcome):
    if outcome["state"] == "succeeded":
        return json.dumps(msgpack.unpackb(outcome["value"], raw=False), sort_keys=True)
    failure = outcome["failure"] or {}
    return "%s: %s" % (failure.get("kind"), failure.get("message"))


def connect(args):
    """(client, is_cluster, namespace) from the command line."""
    if args[0] == "--cluster":
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(*node.rsplit(":", 1)) for node in args[1].split(",")]
        return RedisCluster(startup_nodes=nodes), True, args[2]
    return redis.Redis.from_url(args[0]), False, args[1]


def main():
    r, cluster, namespace = connect(sys.argv[1:])
    enqueued_at = now_ms()
    jobs = {
        "add": enqueue(r, namespace, "py.add", [2, 3]),
        "add-negative": enqueue(r, namespace, "py.add", [-40, -2]),
        "greet-urgent": enqueue(r, namespace, "py.greet", ["Ada"], priority=9),
        "area-of-a-struct": enqueue(r, namespace, "py.area", [{"width": 3, "height": 4}]),
        "add-delayed": enqueue(r, namespace, "py.add", [20, 22], delay_ms=1500),
        "add-id-as-bytes": enqueue(r, namespace, "py.add", [1, 1], id_as_bytes=True),
        "divide-by-zero": enqueue(r, namespace, "py.divide", [1, 0]),
    }
    for key in ["alice", "bob", "carol"]:
        partition = partition_of(PARTITIONED, PARTITIONS, key)
        print("partition %s %s" % (key, partition))
        # The task returns the queue it was claimed from: the partition chosen here.
        jobs["where-" + key] = enqueue(r, namespace, "pyp.where", [key], queue=partition)
    # Two jobs behind a gate that lets one start per hour: one runs, one waits.
    for _ in range(2):
        enqueue(r, namespace, "py.add", [1, 2], queue=GATED, gate="py.add",
                limits="3600000000:1:0")
    outcomes = wait_for_results(r, namespace, list(jobs.values()), cluster)
    missing = 0
    for label, job_id in jobs.items():
        outcome = outcomes.get(job_id)
        if outcome is None:
            print("%s missing (no result within %d s)" % (label, WAIT_S))
            missing += 1
            continue
        print("%s %s %s" % (label, outcome["state"], describe(outcome)))
        if label == "add-delayed":
            # Not before its eta: it started at least 1.5 s after it was enqueued.
            early = outcome["started_at"] is None or outcome["started_at"] < enqueued_at + 1500
            print("add-delayed started %s its eta" % ("before" if early else "after"))
    sys.stdout.flush()
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
