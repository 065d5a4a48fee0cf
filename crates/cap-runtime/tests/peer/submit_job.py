"""Reference-peer client for cap-runtime interop tests.

Submits one job the way cap-sdk-python (2.10.0 or 2.17.0) does: the input JSON is stored in
Redis at ctx:<job_id> (a plain SET, as the SDK runtime's RedisBlobStore does), and the
JobRequest is published with cap.client.submit_job (to sys.job.submit, optionally signed).
With --identity T,P,A,D the request carries that IdentityBinding (2.17.0); with
--envelope-identity the packet carries it too (BusPacket.identity), built and published
through the peer's own boundary (cap.packet_boundary.finalize_packet), which submit_job
does not expose. Then waits for the final JobResult for that job on sys.job.result (a
FAILED_RETRYABLE is not final: a scheduler retries), checks its
signature when a worker public key is given, runs it through the peer's receive boundary
(2.17.0: decode_packet, with the sender's key when given), reads res:<job_id> from Redis
and prints one JSON line:
  {"status": ..., "worker_id": ..., "trace_id": ..., "sender_id": ..., "signed": bool,
   "verified": bool|null, "boundary_accepted": bool|null, "boundary_log": [...],
   "output": <json>|null, "error_code": int, "error_message": str}

usage: submit_job.py NATS_URL REDIS_URL TOPIC JOB_ID INPUT_JSON [--key PRIV.pem]
       [--sender ID] [--worker-pub PUB.pem] [--timeout S] [--identity T,P,A,D]
       [--envelope-identity] [--no-context] [--cleanup-scheduler PREFIX]

The job's Redis keys (ctx:, res:, and with --cleanup-scheduler the scheduler's record
under PREFIX) are deleted before exiting.
"""
import argparse
import asyncio
import json
import logging
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
    ap.add_argument("--identity")
    ap.add_argument("--envelope-identity", action="store_true")
    ap.add_argument("--no-context", action="store_true")
    ap.add_argument("--cleanup-scheduler")
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
    if not a.no_context:
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
        if pkt.job_result.status == job_pb2.JOB_STATUS_FAILED_RETRYABLE:
            return  # not final: a scheduler retries
        if not done.done():
            done.set_result((pkt, msg.data))

    await nc.subscribe(SUBJECT_RESULT, cb=on_result)
    await nc.flush()

    req = job_pb2.JobRequest(job_id=a.job_id, topic=a.topic, context_ptr=f"redis://ctx:{a.job_id}")
    identity = None
    if a.identity:
        tenant, principal, actor, delegation = a.identity.split(",")
        identity = job_pb2.IdentityBinding(
            tenant_id=tenant, principal_id=principal, actor_id=actor, delegation_id=delegation
        )
        req.identity.CopyFrom(identity)
    trace_id = f"py-trace-{a.job_id}"
    if a.envelope_identity:
        from google.protobuf import timestamp_pb2
        from cap.constants import DEFAULT_PROTOCOL_VERSION
        from cap.packet_boundary import finalize_packet
        from cap.subjects import SUBJECT_SUBMIT

        packet = buspacket_pb2.BusPacket(trace_id=trace_id, sender_id=a.sender,
                                         protocol_version=DEFAULT_PROTOCOL_VERSION)
        packet.created_at.GetCurrentTime()
        packet.job_request.CopyFrom(req)
        packet.identity.CopyFrom(identity)
        outgoing = finalize_packet(packet, key)
        await nc.publish(SUBJECT_SUBMIT, outgoing.SerializeToString(deterministic=True))
    else:
        await submit_job(nc, req, trace_id, a.sender, private_key=key)
    await nc.flush()

    try:
        pkt, raw = await asyncio.wait_for(done, timeout=a.timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"error": "timeout"}))
        await nc.drain()
        await cleanup(r, a)
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

    boundary_accepted, boundary_log = None, []
    try:
        from cap.packet_boundary import decode_packet
    except ImportError:
        decode_packet = None
    if decode_packet is not None:
        logger = logging.getLogger("peer-boundary")
        logger.propagate = False

        class Capture(logging.Handler):
            def emit(self, record):
                boundary_log.append(record.getMessage())

        logger.addHandler(Capture())
        keys = {pkt.sender_id: worker_pub} if worker_pub is not None else None
        boundary_accepted = decode_packet(raw, keys, logger) is not None

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
        "boundary_accepted": boundary_accepted,
        "boundary_log": boundary_log,
        "output": output,
        "error_code": res.error_code_enum,
        "error_message": res.error_message,
    }))
    await nc.drain()
    await cleanup(r, a)
    await r.aclose()
    return 0


async def cleanup(r, a):
    await r.delete(f"ctx:{a.job_id}", f"res:{a.job_id}")
    if a.cleanup_scheduler:
        await r.delete(f"{a.cleanup_scheduler}job:{a.job_id}")
        await r.srem(f"{a.cleanup_scheduler}jobs", a.job_id)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
