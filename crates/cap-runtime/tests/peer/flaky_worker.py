"""A reference-peer worker (cap-sdk-python 2.17.0) whose every attempt fails retryably.

It receives dispatched jobs on TOPIC (queue group TOPIC) through the peer's receive
boundary (cap.packet_boundary.decode_packet) and answers each with a JobResult
FAILED_RETRYABLE built and published through the peer's send boundary (finalize_packet),
so that a scheduler retries and finally gives up. Prints "READY" once subscribed, then one
line per attempt ("ATTEMPT <job_id>"), and runs until stdin closes or SIGTERM.

usage: flaky_worker.py NATS_URL TOPIC WORKER_ID
"""
import asyncio
import logging
import signal
import sys

import nats
from google.protobuf import timestamp_pb2

from cap.constants import DEFAULT_PROTOCOL_VERSION
from cap.packet_boundary import decode_packet, finalize_packet
from cap.pb.cordum.agent.v1 import buspacket_pb2, job_pb2
from cap.subjects import SUBJECT_RESULT


async def main() -> int:
    nats_url, topic, worker_id = sys.argv[1:4]
    logger = logging.getLogger("flaky")
    nc = await nats.connect(servers=nats_url, name=worker_id)

    async def on_msg(msg):
        packet = decode_packet(msg.data, None, logger)
        if packet is None or not packet.HasField("job_request"):
            return
        req = packet.job_request
        print(f"ATTEMPT {req.job_id}", flush=True)
        out = buspacket_pb2.BusPacket(trace_id=packet.trace_id, sender_id=worker_id,
                                      protocol_version=DEFAULT_PROTOCOL_VERSION)
        out.created_at.CopyFrom(timestamp_pb2.Timestamp())
        out.created_at.GetCurrentTime()
        out.job_result.CopyFrom(job_pb2.JobResult(
            job_id=req.job_id,
            status=job_pb2.JOB_STATUS_FAILED_RETRYABLE,
            worker_id=worker_id,
            error_message="flaky by design",
            error_code_enum=job_pb2.ERROR_CODE_JOB_RESOURCE_EXHAUSTED,
        ))
        await nc.publish(SUBJECT_RESULT, finalize_packet(out).SerializeToString(deterministic=True))

    await nc.subscribe(topic, queue=topic, cb=on_msg)
    await nc.flush()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    await stop.wait()
    await nc.drain()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
