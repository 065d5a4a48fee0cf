"""Reference-peer client for cap-runtime interop tests.

Submits one job the way cap-sdk-python 2.10.0 does: the input JSON is stored in Redis at
ctx:<job_id> (a plain SET, as the SDK runtime's RedisBlobStore does), and the JobRequest is
published with cap.client.submit_job (to sys.job.submit, optionally signed). Then waits for
the JobResult for that job on sys.job.result, checks its signature when a worker public key
is given, reads res:<job_id> from Redis and prints one JSON line:
  {"status": ..., "worker_id": ..., "trace_id": ..., "sender_id": ..., "signed": bool,
   "verified": bool|null, "output": <json>|null, "error_code": int, "error_message": str}

usage: submit_job.py NATS_URL REDIS_URL TOPIC JOB_ID INPUT_JSON [--key PRIV.pem]
       [--sender ID] [--worker-pub PUB.pem] [--timeout S]
"""
import argparse
import asyncio
import json
import sys

import nats
import redis.asyncio as redis_async
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cap.client import submit_job
from cap.pb.cordum.agent.v1 import buspacket_pb2, job_pb2
from cap.subjects import SUBJECT_RESULT


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("nats_url")
    ap.add_argument("redis_url")
    ap.add_argument("topic")
    ap.add_argument("job_id")
    ap.add_argument("input_json")
    ap.add_argument("--key")
    ap.add_argument("--sender", default="py-client")
    ap.add_argument("--worker-pub")
    ap.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args()

    key = None
    if a.key:
        with open(a.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    worker_pub = None
    if a.worker_pub:
        with open(a.worker_pub, "rb") as f:
            worker_pub = serialization.load_pem_public_key(f.read())

    r = redis_async.from_url(a.redis_url)
    await r.set(f"ctx:{a.job_id}", a.input_json.encode("utf-8"))

    nc = await nats.connect(servers=a.nats_url, name=a.sender)
    done = asyncio.get_running_loop().create_future()

    async def on_result(msg):
        pkt = buspacket_pb2.BusPacket()
        try:
            pkt.ParseFromString(msg.data)
        except Exception:
            return
        if not pkt.HasField("job_result") or pkt.job_result.job_id != a.job_id:
            return
        if not done.done():
            done.set_result((pkt, msg.data))

    await nc.subscribe(SUBJECT_RESULT, cb=on_result)
    await nc.flush()

    req = job_pb2.JobRequest(job_id=a.job_id, topic=a.topic, context_ptr=f"redis://ctx:{a.job_id}")
    trace_id = f"py-trace-{a.job_id}"
    await submit_job(nc, req, trace_id, a.sender, private_key=key)
    await nc.flush()

    try:
        pkt, raw = await asyncio.wait_for(done, timeout=a.timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"error": "timeout"}))
        await nc.drain()
        return 2

    verified = None
    if worker_pub is not None:
        sig = pkt.signature
        unsigned = buspacket_pb2.BusPacket()
        unsigned.CopyFrom(pkt)
        unsigned.ClearField("signature")
        try:
            worker_pub.verify(sig, unsigned.SerializeToString(deterministic=True), ec.ECDSA(hashes.SHA256()))
            verified = True
        except Exception:
            verified = False

    res = pkt.job_result
    output = None
    if res.result_ptr.startswith("redis://"):
        data = await r.get(res.result_ptr[len("redis://"):])
        output = json.loads(data) if data is not None else None
    print(json.dumps({
        "status": job_pb2.JobStatus.Name(res.status),
        "worker_id": res.worker_id,
        "trace_id": pkt.trace_id,
        "sender_id": pkt.sender_id,
        "signed": len(pkt.signature) > 0,
        "verified": verified,
        "output": output,
        "error_code": res.error_code_enum,
        "error_message": res.error_message,
    }))
    await nc.drain()
    await r.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
