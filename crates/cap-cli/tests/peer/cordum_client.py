"""cordum-sdk 0.1.0 against `cap gateway`: the acceptance checks of the gateway.

Usage: cordum_client.py BASE_URL KEY_A TENANT_A KEY_B TENANT_B ECHO_TOPIC SLOW_TOPIC
Prints one line per check passed ("ok <check>") and exits non-zero at the first failure.
"""

import sys
import time

from cordum_sdk import CordumClient, paginate
from cordum_sdk.errors import AuthenticationError, ConflictError, NotFoundError
from cordum_sdk._generated.models.submit_job_request import SubmitJobRequest

base, key_a, tenant_a, key_b, tenant_b, echo_topic, slow_topic = sys.argv[1:8]


def check(cond, what):
    if not cond:
        print("FAILED " + what, flush=True)
        sys.exit(1)
    print("ok " + what, flush=True)


def wait_state(client, job_id, states, within=30.0):
    deadline = time.time() + within
    job = None
    while time.time() < deadline:
        job = client.jobs.get_job(job_id)
        if job.state in states:
            return job
        time.sleep(0.1)
    check(False, "job %s reached %s (last: %s)" % (job_id, states, job and job.state))


a = CordumClient(base, key_a, tenant_id=tenant_a, timeout=10.0)
b = CordumClient(base, key_b, tenant_id=tenant_b, timeout=10.0)

# Submit, poll to SUCCEEDED, read the result.
sub = a.jobs.submit_job(body=SubmitJobRequest(prompt="hello cordum", topic=echo_topic))
check(isinstance(sub.job_id, str) and sub.job_id, "submit_job returns a job id")
job = wait_state(a, sub.job_id, ("SUCCEEDED", "FAILED", "DENIED", "TIMEOUT", "CANCELLED"))
check(job.state == "SUCCEEDED", "get_job polled to SUCCEEDED")
result = job.result.to_dict() if job.result is not None else None
check(result == {"prompt": "hello cordum"}, "the result is read inline: %r" % (result,))
check(isinstance(job.result_ptr, str) and job.result_ptr, "the result pointer is given")
check(job.created_at is not None and job.completed_at is not None, "timestamps parse as RFC 3339")
check(job.tenant == tenant_a and job.topic == echo_topic, "tenant and topic")
check(job.retry_count == 0, "retry count")
decisions = a.jobs.get_job_decisions(sub.job_id)
check(len(decisions) == 1 and decisions[0].action.value == "ALLOW", "decisions")

# More jobs, then list them with pagination.
ids = [sub.job_id]
for i in range(4):
    ids.append(a.jobs.submit_job(body=SubmitJobRequest(prompt="p%d" % i, topic=echo_topic)).job_id)
for j in ids:
    wait_state(a, j, ("SUCCEEDED",))
first = a.jobs.list_jobs(limit=2, topic=echo_topic)
check(len(first.items) == 2 and first.next_cursor, "list_jobs pages by 2 with a cursor")
listed = [j.id for j in paginate(a.jobs.list_jobs, limit=2, topic=echo_topic)]
check(sorted(listed) == sorted(ids) and len(listed) == len(set(listed)), "paginating lists every job once")
check(listed == list(reversed(ids)), "newest first")
succeeded = a.jobs.list_jobs(limit=50, state="SUCCEEDED")
check(len(succeeded.items) == 5 and all(j.state == "SUCCEEDED" for j in succeeded.items), "state filter")

# Cancel a running job; a second cancel is a conflict.
slow = a.jobs.submit_job(body=SubmitJobRequest(prompt="take your time", topic=slow_topic)).job_id
wait_state(a, slow, ("RUNNING",))
cancelled = a.jobs.cancel_job(slow)
check(cancelled.state == "CANCELLED", "cancel_job on a running job: %s" % cancelled.state)
check(a.jobs.get_job(slow).state == "CANCELLED", "the job stays CANCELLED")
try:
    a.jobs.cancel_job(slow)
    check(False, "a second cancel is refused")
except ConflictError:
    check(True, "a second cancel is 409")

# Unknown ids are 404; no key is 401.
try:
    a.jobs.get_job("no-such-job")
    check(False, "unknown id is refused")
except NotFoundError:
    check(True, "unknown id is 404")
anon = CordumClient(base, None, tenant_id=tenant_a, timeout=10.0)
try:
    anon.jobs.get_job(sub.job_id)
    check(False, "no key is refused")
except AuthenticationError:
    check(True, "no API key is 401")

# The other tenant never sees tenant A's jobs.
try:
    b.jobs.get_job(sub.job_id)
    check(False, "another tenant's job is hidden")
except NotFoundError:
    check(True, "another tenant's job is 404")
check(list(paginate(b.jobs.list_jobs, limit=10)) == [], "another tenant's list is empty")
mine = b.jobs.submit_job(body=SubmitJobRequest(prompt="b's", topic=echo_topic)).job_id
wait_state(b, mine, ("SUCCEEDED",))
check([j.id for j in paginate(b.jobs.list_jobs, limit=10)] == [mine], "tenant B sees only its job")
check(mine not in [j.id for j in paginate(a.jobs.list_jobs, limit=10)], "tenant A does not see B's job")
print("all checks passed", flush=True)
