"""Reference-peer worker for cap-runtime interop tests and the e2e benchmark.

Runs a cap-sdk-python (2.10.0 or 2.17.0) `Agent` with one echo handler on TOPIC (it
subscribes to the topic in the queue group of the same name, reads the context from Redis
and writes the result to res:<job_id>). With --key it signs its packets; with --trust
SENDER=PUB.pem it verifies (and requires) signatures from those senders, like the SDK does
once keys are given. With --report the output is {"input": <the input>, "identity": the
job request's identity, "envelope_identity": the packet's identity (2.17.0), "sender": the
dispatching packet's sender} instead of the input alone. Prints "READY" on stdout once
subscribed, and runs until stdin closes or SIGTERM.

usage: echo_agent.py NATS_URL REDIS_URL TOPIC WORKER_ID [--key PRIV.pem]
       [--trust SENDER=PUB.pem ...] [--report]
"""
import argparse
import asyncio
import logging
import signal
import sys

from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format

from cap.runtime import Agent


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("nats_url")
    ap.add_argument("redis_url")
    ap.add_argument("topic")
    ap.add_argument("worker_id")
    ap.add_argument("--key")
    ap.add_argument("--trust", action="append", default=[])
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()

    logging.getLogger("cap.runtime").setLevel(logging.ERROR)
    key = None
    if a.key:
        with open(a.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    public_keys = None
    if a.trust:
        public_keys = {}
        for item in a.trust:
            sender, path = item.split("=", 1)
            with open(path, "rb") as f:
                public_keys[sender] = serialization.load_pem_public_key(f.read())

    agent = Agent(
        nats_url=a.nats_url,
        redis_url=a.redis_url,
        worker_id=a.worker_id,
        private_key=key,
        public_keys=public_keys,
        max_parallel=64,
    )

    @agent.job(a.topic)
    async def echo(ctx, data):
        if not a.report:
            return data
        packet = getattr(ctx, "packet", None)
        envelope = None
        if packet is not None and "identity" in packet.DESCRIPTOR.fields_by_name and packet.HasField("identity"):
            envelope = json_format.MessageToDict(packet.identity)
        identity = None
        if "identity" in ctx.job.DESCRIPTOR.fields_by_name and ctx.job.HasField("identity"):
            identity = json_format.MessageToDict(ctx.job.identity)
        return {
            "input": data,
            "identity": identity,
            "envelope_identity": envelope,
            "sender": packet.sender_id if packet is not None else None,
        }

    await agent.start()
    await agent._nc.flush()
    print("READY", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    await stop.wait()
    await agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
