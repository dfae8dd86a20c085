"""Hooks of dmq-cli/tests/http_fuzz.rs: long polls kept short, names within the
broker's 255 bytes, idempotency keys and chosen job ids fresh."""

import uuid

import schemathesis

# The longest wait a request asks for, in milliseconds. The server waits up to 30,000
# for a claim or a result that does not come, and no worker runs the jobs here.
SHORT_WAIT_MS = 50


def _short(value):
    # A wait the schema allows (a whole number from 0 to 2^64 - 1) is shortened and
    # stays allowed; any other value is sent as generated.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return str(_short(int(value)))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not value.is_integer():
        return value
    return min(value, SHORT_WAIT_MS) if 0 <= value < 2**64 else value


def _fit(name):
    # JSON Schema's maxLength counts characters, the broker's limit on a name is 255
    # bytes of UTF-8, which no schema can say: a name within the one and over the
    # other is cut, at a character, to fit both.
    if not isinstance(name, str) or len(name) > 255:
        return name
    while len(name.encode("utf-8", "surrogatepass")) > 255:
        name = name[:-1]
    return name


@schemathesis.hook
def before_call(context, case, kwargs):
    # Every request, in every phase; schemathesis checks the case again afterwards, so
    # a case these edits make valid is no longer taken for an invalid one.
    if isinstance(case.query, dict) and "wait_ms" in case.query:
        case.query["wait_ms"] = _short(case.query["wait_ms"])
    body = case.body
    if isinstance(body, dict) and "wait_ms" in body:
        body["wait_ms"] = _short(body["wait_ms"])
    if isinstance(case.path_parameters, dict) and "queue" in case.path_parameters:
        case.path_parameters["queue"] = _fit(case.path_parameters["queue"])
    jobs = body.get("jobs") if isinstance(body, dict) else None
    for job in [body, *jobs] if isinstance(jobs, list) else [body]:
        if isinstance(job, dict):
            for field in ("task", "queue"):
                if field in job:
                    job[field] = _fit(job[field])
    # A key used before answers with its earlier job, which a purge or a claim in
    # between may have removed: a fresh key keeps "an enqueued job can be read back"
    # checkable.
    if isinstance(body, dict) and isinstance(body.get("idempotency_key"), str):
        body["idempotency_key"] += "-" + uuid.uuid4().hex
    # So is a job id of the caller's choosing, for the same reason; one that is no
    # UUID is sent as generated.
    for job in [body, *jobs] if isinstance(jobs, list) else [body]:
        if isinstance(job, dict) and isinstance(job.get("id"), str):
            try:
                uuid.UUID(job["id"])
            except ValueError:
                continue
            job["id"] = str(uuid.uuid4())
