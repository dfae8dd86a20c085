"""A small client for dmq's HTTP API (`dmq serve`, docs/http-api.md).

Produce::

    from dmq_client import Client
    dmq = Client("http://127.0.0.1:8080", token="...")
    job = dmq.enqueue("reports.build", [2024, "pdf"], queue="reports")
    outcome = dmq.result(job["id"], wait=10)   # {"state": "succeeded", "value": ...}

Consume (run jobs in Python under dmq's fenced leases)::

    dmq.run("emails", lambda job: send(*job.args))   # acks on return, nacks on exception

Times are seconds here and milliseconds on the wire. Only `requests` is needed.
"""

import datetime
import time

import requests

__all__ = ["Client", "DmqError", "Job"]

# Options whose value is seconds here and milliseconds on the wire.
_MILLIS = {"delay": "delay_ms", "timeout": "timeout_ms"}


class DmqError(Exception):
    """An error answer: `status` (HTTP), `code` and `message` from the body's
    {"error": {"code", "message"}}, and for a 429 `retry_after` in seconds."""

    def __init__(self, status, code, message, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _job_body(task, args, queue, options):
    body = {"task": task, "args": list(args)}
    if queue is not None:
        body["queue"] = queue
    for key, value in options.items():
        if value is None:
            continue
        if key in _MILLIS:
            key, value = _MILLIS[key], int(value * 1000)
        elif isinstance(value, datetime.datetime):
            value = value.isoformat()
        body[key] = value
    return body


class Client:
    """A connection to one `dmq serve`: its base URL (`http://host:port`, no `/v1`),
    a bearer token, and for HTTPS with a private CA, `ca_file` (a PEM file).
    `timeout` bounds each request, beyond any long-poll wait it asks for."""

    def __init__(self, base_url, token=None, ca_file=None, timeout=10.0, session=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if ca_file is not None:
            self.session.verify = ca_file

    def _call(self, method, path, body=None, params=None, wait=0.0):
        response = self.session.request(
            method,
            f"{self.base_url}/v1{path}",
            json=body,
            params=params,
            timeout=self.timeout + wait,
        )
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text.strip() or response.reason
            after = response.headers.get("Retry-After")
            retry_after = float(after) if after and after.isdigit() else None
            raise DmqError(response.status_code, code, message, retry_after)
        return response.json()

    # Producers.

    def enqueue(self, task, args=(), queue=None, **options):
        """Enqueues one job of `task` with `args` (a list, one value per parameter).
        `options`: delay (s), eta (datetime), priority, idempotency_key, expires_at,
        max_retries, timeout (s), headers, partition_key. Returns {"id", "queue",
        "eta", "existing"}."""
        return self._call("POST", "/jobs", _job_body(task, args, queue, options))

    def enqueue_batch(self, jobs):
        """Enqueues jobs in one atomic step; each is a dict with "task", "args" and the
        options `enqueue` takes. Returns their ids, in order."""
        bodies = []
        for job in jobs:
            job = dict(job)
            task, args, queue = job.pop("task"), job.pop("args", ()), job.pop("queue", None)
            bodies.append(_job_body(task, args, queue, job))
        return self._call("POST", "/jobs/batch", {"jobs": bodies})["ids"]

    def job(self, job_id):
        """A job's state ("ready", "in_flight", "succeeded", ...) and outcome."""
        return self._call("GET", f"/jobs/{job_id}")

    def result(self, job_id, wait=0.0):
        """The job's outcome ({"state", "value", "error", ...}), waiting up to `wait`
        seconds (at most 30) for it; None when there is none (yet)."""
        params = {"wait_ms": int(wait * 1000)} if wait else None
        try:
            return self._call("GET", f"/jobs/{job_id}/result", params=params, wait=wait)
        except DmqError as e:
            if e.status == 404:
                return None
            raise

    # Consumers.

    def claim(self, queue, max=1, lease=30.0, wait=0.0):
        """Claims up to `max` jobs of `queue`, each under a lease of `lease` seconds,
        waiting up to `wait` seconds when none is due. Returns a list of `Job`."""
        body = {"max": max, "lease_ms": int(lease * 1000), "wait_ms": int(wait * 1000)}
        claimed = self._call("POST", f"/queues/{queue}/claim", body, wait=wait)
        return [Job(self, job) for job in claimed["jobs"]]

    def run(self, queue, handler, max=1, lease=30.0, wait=10.0, limit=None):
        """Claims jobs of `queue` and calls `handler(job)` on each: acks with its
        return value (JSON), nacks with the exception's text when it raises (the job's
        retry policy decides what follows). A lost lease (409) drops the job; a 429 or
        503 waits and goes on. Stops after `limit` jobs (None: never). Returns how
        many jobs it handled."""
        done = 0
        while limit is None or done < limit:
            try:
                jobs = self.claim(queue, max=max, lease=lease, wait=wait)
            except DmqError as e:
                if e.status not in (429, 503):
                    raise
                time.sleep(e.retry_after or 1.0)
                continue
            for job in jobs:
                try:
                    try:
                        value = handler(job)
                    except Exception as e:  # noqa: BLE001 - the job's failure, reported
                        job.nack(f"{type(e).__name__}: {e}")
                    else:
                        job.ack(value)
                except DmqError as e:
                    if e.status != 409:
                        raise
                done += 1
        return done


class Job:
    """A claimed job: `id`, `task`, `args`, `attempt`, `deliveries`, `isolated`,
    `headers`, and the `lease` that settles it (ack, nack, renew, release)."""

    def __init__(self, client, body):
        self._client = client
        self.body = body
        self.lease = body["lease"]
        self.id = body["id"]
        self.task = body["task"]
        self.args = body["args"]
        self.attempt = body["attempt"]
        self.deliveries = body["deliveries"]
        self.isolated = body["isolated"]
        self.headers = body["headers"]

    def __repr__(self):
        return f"Job(id={self.id!r}, task={self.task!r}, attempt={self.attempt})"

    def _settle(self, action, **fields):
        return self._client._call("POST", f"/leases/{action}", {"lease": self.lease, **fields})

    def ack(self, result=None):
        """Settles the job as done with `result` (JSON) as its stored value."""
        return self._settle("ack", result=result)

    def nack(self, error, retry=True, delay=None):
        """Settles a failed run: retried by the job's policy after its backoff (or
        `delay` seconds), or with retry=False failed for good (dead-lettered).
        Returns {"outcome": "retried" or "dead_lettered", ...}."""
        fields = {"error": str(error), "retry": retry}
        if delay is not None:
            fields["delay_ms"] = int(delay * 1000)
        return self._settle("nack", **fields)

    def renew(self, lease=30.0):
        """Extends the lease to `lease` seconds from now."""
        return self._settle("renew", lease_ms=int(lease * 1000))

    def release(self):
        """Puts the job back in its queue at once, unrun."""
        return self._settle("release")
