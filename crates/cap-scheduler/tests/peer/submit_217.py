"""A cap-sdk-python 2.17.0 client: submits jobs through the scheduler and waits.

For each job id: the input JSON goes to Redis at ctx:<job_id> (as the SDK's runtime
stores contexts), the JobRequest goes out with `cap.client.submit_job` on
sys.job.submit, and the JobResult for it is awaited on sys.job.result. Prints one JSON
line per job: {"job_id", "status", "worker_id", "sender_id", "output"} (status "timeout"
when none came), then exits 0.

usage: submit_217.py NATS_URL REDIS_URL TOPIC TIMEOUT_S JOB_ID...
"""
import asyncio
import json
import sys

import nats
import redis.asyncio as redis_async

from cap.client import submit_job
from cap.pb.cordum.agent.v1 import buspacket_pb2, job_pb2
from cap.subjects import SUBJECT_RESULT


async def main() -> int:
    nats_url, redis_url, topic, timeout = sys.argv[1:5]
    job_ids = sys.argv[5:]
    r = redis_async.from_url(redis_url)
    nc = await nats.connect(servers=nats_url, name="py-client-217")
    loop = asyncio.get_running_loop()
    waiting = {j: loop.create_future() for j in job_ids}

    async def on_result(msg):
        pkt = buspacket_pb2.BusPacket()
        try:
            pkt.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001 - not ours
            return
        if not pkt.HasField("job_result"):
            return
        fut = waiting.get(pkt.job_result.job_id)
        if fut is not None and not fut.done():
            fut.set_result(pkt)

    await nc.subscribe(SUBJECT_RESULT, cb=on_result)
    await nc.flush()
    for job_id in job_ids:
        await r.set(f"ctx:{job_id}", json.dumps({"job": job_id}).encode(), ex=600)
        req = job_pb2.JobRequest(job_id=job_id, topic=topic, context_ptr=f"redis://ctx:{job_id}")
        await submit_job(nc, req, f"trace-{job_id}", "py-client-217")
    await nc.flush()
    for job_id in job_ids:
        try:
            pkt = await asyncio.wait_for(waiting[job_id], timeout=float(timeout))
        except asyncio.TimeoutError:
            print(json.dumps({"job_id": job_id, "status": "timeout"}), flush=True)
            continue
        res = pkt.job_result
        output = None
        if res.result_ptr.startswith("redis://"):
            data = await r.get(res.result_ptr[len("redis://"):])
            output = json.loads(data) if data is not None else None
            await r.delete(res.result_ptr[len("redis://"):])
        await r.delete(f"ctx:{job_id}")
        print(json.dumps({
            "job_id": job_id, "status": job_pb2.JobStatus.Name(res.status),
            "worker_id": res.worker_id, "sender_id": pkt.sender_id, "output": output,
        }), flush=True)
    await nc.drain()
    await r.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
