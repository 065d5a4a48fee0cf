"""A long-running reference peer (cap-sdk-python 2.10.0 or 2.17.0) for the property tests.

Reads one JSON request per line on stdin, writes one JSON answer per line on stdout, so a
test can send thousands of cases through one interpreter. Every answer comes from the
peer's own code: its generated `_pb2` classes, `google.protobuf.json_format`, its
`validate_bus_packet`, and (2.17.0) `cap.packet_boundary.decode_packet`.

Requests (hex = protobuf bytes in lowercase hex, type = full message name):
  {"op": "version"}                        -> {"version": "2.17.0"}
  {"op": "descriptors"}                    -> {"hex": FileDescriptorSet of every cap _pb2 file}
  {"op": "vectors"}                        -> {"vectors": [{name, type, hex}]} (vectors.py)
  {"op": "canonical", "type", "hex"}       -> {"hex": SerializeToString(deterministic=True)}
  {"op": "json", "type", "hex"}            -> {"json": MessageToJson(...)}
  {"op": "from_json", "type", "json"}      -> {"hex": deterministic bytes of Parse(json)}
  {"op": "validate", "hex"}                -> {"errors": [[field, message], ...]}
                                              (validate_bus_packet of the parsed packet)
  {"op": "sign", "hex", "key", "plain"?}   -> {"hex": the packet signed with the private key
                                              (PEM) the way the peer signs what it publishes:
                                              2.17.0 finalize_packet (validate, then sign),
                                              2.10.0 (or "plain": true) the deterministic
                                              bytes without field 14; "how": which}
  {"op": "receive", "hex", "pem"?}         -> {"accepted": bool, "log": [...]}: the peer's
                                              receive path (2.17.0: decode_packet with the
                                              sender's key when pem is given; 2.10.0: its
                                              Agent's receive path, Agent._on_msg)
Any failure -> {"error": "..."}.
"""
import asyncio
import glob
import importlib
import importlib.metadata
import json
import logging
import os
import sys

from google.protobuf import descriptor_pb2, json_format
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cap.metrics import NoopMetrics
import cap.pb.cordum.agent.v1 as pb_pkg
from cap.pb.cordum.agent.v1 import buspacket_pb2

MODULES = []
for path in sorted(glob.glob(os.path.join(os.path.dirname(pb_pkg.__file__), "*_pb2.py"))):
    MODULES.append(importlib.import_module("cap.pb.cordum.agent.v1." + os.path.basename(path)[:-3]))

TYPES = {}
for mod in MODULES:
    for name, desc in mod.DESCRIPTOR.message_types_by_name.items():
        TYPES[desc.full_name] = getattr(mod, name)

VERSION = importlib.metadata.version("cap-sdk-python")


def descriptors():
    """Every cap file and what it imports (google/protobuf/*), imports first."""
    fds = descriptor_pb2.FileDescriptorSet()
    done = set()

    def add(file_desc):
        if file_desc.name in done:
            return
        done.add(file_desc.name)
        for dep in file_desc.dependencies:
            add(dep)
        fds.file.add().ParseFromString(file_desc.serialized_pb)

    for mod in MODULES:
        add(mod.DESCRIPTOR)
    return fds.SerializeToString(deterministic=True).hex()


def parse(type_name, hexdata):
    msg = TYPES[type_name]()
    msg.ParseFromString(bytes.fromhex(hexdata))
    return msg


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def receive(hexdata, pem):
    data = bytes.fromhex(hexdata)
    logger = logging.getLogger("peer-receive")
    logger.propagate = False
    logger.handlers = []
    capture = Capture()
    logger.addHandler(capture)
    public_key = serialization.load_pem_public_key(pem.encode()) if pem else None
    try:
        from cap.packet_boundary import decode_packet
    except ImportError:
        decode_packet = None
    if decode_packet is not None:
        packet = buspacket_pb2.BusPacket()
        try:
            packet.ParseFromString(data)
        except Exception as exc:  # the boundary reports it too
            capture.messages.append(str(exc))
        keys = {packet.sender_id: public_key} if public_key is not None else None
        accepted = decode_packet(data, keys, logger) is not None
        return {"accepted": accepted, "log": capture.messages}
    # 2.10.0 has no shared boundary: its Agent's receive path (cap/runtime.py,
    # Agent._on_msg) parses, checks the signature over the deterministic bytes without
    # field 14, then runs the handler for a job request.
    return asyncio.run(agent_receive(data, public_key, logger, capture))


class Received(NoopMetrics):
    def __init__(self):
        self.jobs = []

    def on_job_received(self, job_id, topic):
        self.jobs.append(job_id)


class Msg:
    def __init__(self, data):
        self.data = data


async def agent_receive(data, public_key, logger, capture):
    from cap.runtime import Agent, HandlerSpec, InMemoryBlobStore

    packet = buspacket_pb2.BusPacket()
    try:
        packet.ParseFromString(data)
    except Exception as exc:
        return {"accepted": False, "log": [str(exc)]}
    metrics = Received()
    agent = Agent(
        public_keys={packet.sender_id: public_key} if public_key is not None else None,
        store=InMemoryBlobStore(),
        logger=logger,
        metrics=metrics,
        io_timeout=1.0,
    )

    async def handler(ctx, payload):
        return payload

    spec = HandlerSpec(topic=packet.job_request.topic or "job.echo", func=handler,
                       input_model=None, output_model=None, retries=0)
    await agent._on_msg(Msg(data), spec)
    rejected = [m for m in capture.messages if "signature" in m or "public key" in m or "decode" in m]
    accepted = not rejected
    if packet.WhichOneof("payload") == "job_request":
        accepted = accepted and packet.job_request.job_id in metrics.jobs
    return {"accepted": accepted, "log": capture.messages}


def sign(hexdata, key_pem, plain):
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    packet = parse("cordum.agent.v1.BusPacket", hexdata)
    try:
        from cap.packet_boundary import finalize_packet
    except ImportError:
        finalize_packet = None
    if finalize_packet is not None and not plain:
        signed = finalize_packet(packet, key)
        return {"hex": signed.SerializeToString(deterministic=True).hex(), "how": "finalize_packet"}
    # What 2.10.0 does in cap.client.submit_job and its Agent's results.
    packet.ClearField("signature")
    unsigned = packet.SerializeToString(deterministic=True)
    packet.signature = key.sign(unsigned, ec.ECDSA(hashes.SHA256()))
    return {"hex": packet.SerializeToString(deterministic=True).hex(), "how": "plain"}


def handle(req):
    op = req["op"]
    if op == "version":
        return {"version": VERSION}
    if op == "descriptors":
        return {"hex": descriptors()}
    if op == "canonical":
        return {"hex": parse(req["type"], req["hex"]).SerializeToString(deterministic=True).hex()}
    if op == "json":
        return {"json": json_format.MessageToJson(parse(req["type"], req["hex"]))}
    if op == "from_json":
        msg = TYPES[req["type"]]()
        json_format.Parse(req["json"], msg)
        return {"hex": msg.SerializeToString(deterministic=True).hex()}
    if op == "validate":
        from cap.validate import validate_bus_packet

        packet = parse("cordum.agent.v1.BusPacket", req["hex"])
        return {"errors": [[e.field, e.message] for e in validate_bus_packet(packet)]}
    if op == "receive":
        return receive(req["hex"], req.get("pem"))
    if op == "vectors":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import vectors

        return {"vectors": [
            {"name": name, "type": msg.DESCRIPTOR.full_name,
             "hex": msg.SerializeToString(deterministic=True).hex()}
            for name, msg in vectors.vectors()
        ]}
    if op == "sign":
        return sign(req["hex"], req["key"], req.get("plain", False))
    raise ValueError("unknown op " + op)


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line))
        except Exception as exc:
            answer = {"error": "{}: {}".format(type(exc).__name__, exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
