"""Signature interop with the reference peer (cap-sdk-python 2.10.0).

  sign.py make OUTDIR         writes OUTDIR/peer.pem; prints {name, hex} lines: packets the
                              peer signed the way it signs everything it publishes
  sign.py verify PEM FILE     runs each {name, hex} packet of FILE through the peer's Agent
                              receive path with PEM as the sender's key; prints {name, ok}
"""
import asyncio
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "cap-proto", "tests", "peer"))
import vectors  # noqa: E402  (the shared message builders)

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cap.metrics import NoopMetrics  # noqa: E402
from cap.pb.cordum.agent.v1 import buspacket_pb2  # noqa: E402
from cap.runtime import Agent, HandlerSpec, InMemoryBlobStore  # noqa: E402

SENDER = "peer-signer"


def peer_sign(packet, key):
    packet.ClearField("signature")
    unsigned = packet.SerializeToString(deterministic=True)
    packet.signature = key.sign(unsigned, ec.ECDSA(hashes.SHA256()))
    return packet.SerializeToString(deterministic=True)


def make(outdir):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(os.path.join(outdir, "peer.pem"), "wb") as f:
        f.write(pem)
    for name, msg in vectors.vectors():
        if msg.DESCRIPTOR.full_name != "cordum.agent.v1.BusPacket" or not msg.WhichOneof("payload"):
            continue
        msg.sender_id = SENDER
        for i in range(8):  # several signatures each: random nonces, about half high-S
            print(json.dumps({"name": f"{name}#{i}", "hex": peer_sign(msg, key).hex()}))


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class Received(NoopMetrics):
    def __init__(self):
        self.jobs = []

    def on_job_received(self, job_id, topic):
        self.jobs.append(job_id)


class Msg:
    def __init__(self, data):
        self.data = data


async def verify(pem_path, path):
    with open(pem_path, "rb") as f:
        public_key = serialization.load_pem_public_key(f.read())
    with open(path) as f:
        items = [json.loads(line) for line in f if line.strip()]
    for item in items:
        data = bytes.fromhex(item["hex"])
        packet = buspacket_pb2.BusPacket()
        packet.ParseFromString(data)
        logger = logging.getLogger(f"peer-{item['name']}")
        logger.propagate = False
        capture = Capture()
        logger.addHandler(capture)
        metrics = Received()
        agent = Agent(
            public_keys={packet.sender_id: public_key},
            store=InMemoryBlobStore(),
            logger=logger,
            metrics=metrics,
            io_timeout=1.0,
        )

        async def handler(ctx, data):
            return data

        spec = HandlerSpec(topic="job.echo", func=handler, input_model=None, output_model=None, retries=0)
        await agent._on_msg(Msg(data), spec)
        rejected = [m for m in capture.messages if "signature" in m or "public key" in m]
        ok = not rejected
        if packet.WhichOneof("payload") == "job_request":
            ok = ok and packet.job_request.job_id in metrics.jobs
        print(json.dumps({"name": item["name"], "ok": ok, "log": rejected}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "verify":
        asyncio.run(verify(sys.argv[2], sys.argv[3]))
