"""dmq over HTTP from Python, with clients/python/dmq_client.py: run by tests/http_python.rs.

Environment: DMQ_URL (the `dmq serve` base URL), DMQ_PRODUCER_TOKEN (scope produce,
every queue), DMQ_CONSUMER_TOKEN (scope consume, queue DMQ_QUEUE_B only),
DMQ_QUEUE_A (a Rust worker runs `e2e.count` there: it returns n * 2), DMQ_QUEUE_B
(no worker: this script consumes it), DMQ_JOBS (how many jobs go to queue A).

It prints one line per fact, which the Rust side compares with what it expects and
checks against Redis:

    count <id> <n> <value>          a job of queue A and the value its result holds
    acked <id> <value>              a job of queue B this script acked
    failed <id> <kind> <message>    a job of queue B this script failed
    refused <what> <status> <code>  a request the server refused

It exits 1 with the reason on stderr when anything is not as expected.
"""

import os
import sys

from dmq_client import Client, DmqError

WAIT = 20  # seconds; generous, never a performance bound


def check(condition, what):
    if not condition:
        print(f"not as expected: {what}", file=sys.stderr)
        sys.exit(1)


def refused(label, call):
    try:
        call()
    except DmqError as e:
        print(f"refused {label} {e.status} {e.code}")
        return
    check(False, f"{label} was not refused")


def main():
    url = os.environ["DMQ_URL"]
    queue_a, queue_b = os.environ["DMQ_QUEUE_A"], os.environ["DMQ_QUEUE_B"]
    jobs = int(os.environ["DMQ_JOBS"])
    producer = Client(url, token=os.environ["DMQ_PRODUCER_TOKEN"])
    consumer = Client(url, token=os.environ["DMQ_CONSUMER_TOKEN"])

    # (a) Jobs for the Rust worker: half one by one, half in one batch.
    single = [producer.enqueue("e2e.count", [n], queue=queue_a)["id"] for n in range(jobs // 2)]
    batch = producer.enqueue_batch(
        [{"task": "e2e.count", "args": [n], "queue": queue_a} for n in range(jobs // 2, jobs)]
    )
    for n, job_id in enumerate(single + batch):
        outcome = producer.result(job_id, wait=WAIT)
        check(outcome is not None, f"job {job_id} has no result within {WAIT} s")
        check(outcome["state"] == "succeeded", f"job {job_id}: {outcome}")
        check(producer.job(job_id)["state"] == "succeeded", f"job {job_id}'s state")
        print(f"count {job_id} {n} {outcome['value']}")

    # (b) Jobs no Rust worker runs, consumed here: claim, renew, release, ack, nack.
    ids = producer.enqueue_batch(
        [{"task": "py.shout", "args": [word], "queue": queue_b} for word in ("ada", "bob")]
    )
    fail_id = producer.enqueue("py.shout", ["eve"], queue=queue_b)["id"]
    claimed = []
    while len(claimed) < 3:
        got = consumer.claim(queue_b, max=3, lease=30, wait=5)
        check(got, "no job of queue B came within 5 s")
        claimed += got
    check(sorted(j.id for j in claimed) == sorted(ids + [fail_id]), "the claimed jobs")
    for job in claimed:
        check(job.task == "py.shout" and job.attempt == 1, f"claimed {job}")
        check(job.renew(lease=60)["outcome"] == "renewed", "renew")
        if job.id == fail_id:
            check(job.nack("no such mailbox", retry=False)["outcome"] == "dead_lettered", "nack")
        elif job.args == ["bob"]:
            check(job.release()["outcome"] == "released", "release")
        else:
            check(job.ack(job.args[0].upper())["outcome"] == "acked", "ack")
            print(f"acked {job.id} {job.args[0].upper()}")
    # The released job comes back; run() acks what the handler returns.
    handled = consumer.run(queue_b, lambda job: job.args[0].upper(), wait=5, limit=1)
    check(handled == 1, "run() handled the released job")
    print(f"acked {ids[1]} BOB")
    # run() nacks a job whose handler raises; with no retries left it fails for good.
    raising_id = producer.enqueue("py.shout", [""], queue=queue_b)["id"]

    def shout(job):
        if not job.args[0]:
            raise ValueError("nothing to shout")
        return job.args[0].upper()

    check(consumer.run(queue_b, shout, wait=5, limit=1) == 1, "run() handled the raising job")
    for job_id in ids:
        outcome = producer.result(job_id, wait=WAIT)
        check(outcome and outcome["state"] == "succeeded", f"job {job_id}: {outcome}")
    for job_id in (fail_id, raising_id):
        outcome = producer.result(job_id, wait=WAIT)
        check(outcome and outcome["state"] == "failed", f"job {job_id}: {outcome}")
        error = outcome["error"]
        print(f"failed {job_id} {error['kind']} {error['message']}")
    # A settled lease is lost: a second ack is refused.
    refused("second-ack", lambda: claimed[0].ack("again"))

    # (c) What the tokens may not do.
    refused("consumer-claims-queue-a", lambda: consumer.claim(queue_a))
    refused("producer-claims", lambda: producer.claim(queue_b))
    refused("consumer-enqueues", lambda: consumer.enqueue("py.shout", ["x"], queue=queue_b))
    refused("no-token", lambda: Client(url).claim(queue_b))
    refused("unknown-token", lambda: Client(url, token="x" * 32).enqueue("t", queue=queue_b))


if __name__ == "__main__":
    main()
