"""Times the reference peer's sign and verify of one packet, the way it publishes and
receives packets (deterministic serialize + cryptography/OpenSSL ECDSA).

  bench.py PACKET_HEX SECONDS   -> {"sign_per_sec": …, "verify_per_sec": …}
"""
import json
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cap.pb.cordum.agent.v1 import buspacket_pb2


def rate(seconds, op):
    for _ in range(50):
        op()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(32):
            op()
        n += 32
    return n / (time.perf_counter() - start)


def main():
    raw = bytes.fromhex(sys.argv[1])
    seconds = float(sys.argv[2])
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    template = buspacket_pb2.BusPacket()
    template.ParseFromString(raw)

    def sign():
        p = buspacket_pb2.BusPacket()
        p.CopyFrom(template)
        p.ClearField("signature")
        unsigned = p.SerializeToString(deterministic=True)
        p.signature = key.sign(unsigned, ec.ECDSA(hashes.SHA256()))
        return p.SerializeToString(deterministic=True)

    signed = sign()

    def verify():
        p = buspacket_pb2.BusPacket()
        p.ParseFromString(signed)
        sig = p.signature
        p.ClearField("signature")
        public.verify(sig, p.SerializeToString(deterministic=True), ec.ECDSA(hashes.SHA256()))

    print(json.dumps({"sign_per_sec": round(rate(seconds, sign)), "verify_per_sec": round(rate(seconds, verify))}))


if __name__ == "__main__":
    main()
