"""Worker-side driver of the trust handshake with cap-sdk-python 2.17.0's own code.

The Rust test runs our trust server in process and this script as a subprocess; they
talk JSON Lines over stdin/stdout:
  script -> test: {"op": "challenge"|"authenticate", "data": b64, "at": seconds}
                  (a packet for the server; "at": the server's clock offset from now)
  test -> script: {"reply": b64}
  script -> test: {"op": "digest", "data": b64, "digest": hex}
                  (the peer's trust_packet_digest of a packet, for the test to compare)
  script -> test: {"op": "done", ...what the peer concluded...}

Every packet is built and signed by the peer's worker_trust_build / trust_signing code
(changed afterwards only where a scenario needs a defect, and then signed again with
the peer's sign_trust_packet); every reply is checked with the peer's verify_challenge /
verify_result.

usage: trust_peer.py SCENARIO WORKER_KEY.pem SCHEDULER_PUB.pem
"""
import base64
import json
import secrets
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cap.pb.cordum.agent.v1 import buspacket_pb2, handshake_pb2
from cap.trust_signing import sign_trust_packet, trust_packet_digest
from cap.worker_trust import (
    WorkerHandshakeRejectionError,
    WorkerHandshakeRequestOptions,
    WorkerTrustConfig,
    build_authenticate,
    build_challenge_request,
    verify_challenge,
    verify_result,
)
from cap.worker_trust_codec import unmarshal_worker_trust_packet

ISSUE = handshake_pb2.WORKER_HANDSHAKE_PURPOSE_ISSUE
RENEW = handshake_pb2.WORKER_HANDSHAKE_PURPOSE_RENEW


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def exchange(op, data, at=0):
    send({"op": op, "data": base64.b64encode(data).decode(), "at": at})
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("test closed the pipe")
    return base64.b64decode(json.loads(line)["reply"])


def digest(packet):
    data = packet.SerializeToString(deterministic=True)
    send({"op": "digest", "data": base64.b64encode(data).decode(),
          "digest": trust_packet_digest(packet).hex()})


def now():
    return datetime.now(timezone.utc)


def config(key, scheduler_pub, worker_id="w-1", key_id="k-1"):
    return WorkerTrustConfig(
        worker_id=worker_id, expected_agent_id=worker_id, tenant_id="default",
        audience="cordum-scheduler", proof_key_id=key_id, proof_private_key=key,
        expected_scheduler_id="sched-test",
        scheduler_public_keys={"sched-key-1": scheduler_pub},
        sdk_version="cap-python/2.17.0",
    )


def options(purpose=ISSUE, created_at=None):
    return WorkerHandshakeRequestOptions(
        request_id=secrets.token_hex(16), trace_id=secrets.token_hex(16),
        purpose=purpose, client_nonce=secrets.token_bytes(32),
        created_at=created_at or now(),
    )


def capability(cfg):
    return handshake_pb2.Handshake(
        component_id=cfg.worker_id, role=handshake_pb2.COMPONENT_ROLE_WORKER,
        supported_versions=[1], capabilities={"job.echo": True},
        sdk_version=cfg.sdk_version, ready_topics=["job.echo"],
    )


def ser(packet):
    return packet.SerializeToString(deterministic=True)


def reason_of(data):
    """The rejection reason of our reply, read the peer's way (signature unchecked)."""
    p = buspacket_pb2.BusPacket.FromString(data)
    if p.WhichOneof("payload") == "worker_handshake_result":
        return p.worker_handshake_result.rejection_reason
    return 0


def challenged(cfg, purpose=ISSUE):
    request = build_challenge_request(cfg, options(purpose))
    reply = exchange("challenge", ser(request))
    return request, reply, verify_challenge(cfg, request, unmarshal_worker_trust_packet(reply), now())


def peer_result(cfg, verified, auth, reply):
    """What the peer makes of our result: a session, a rejection reason, or an error."""
    try:
        session = verify_result(cfg, verified, auth, unmarshal_worker_trust_packet(reply), now())
        return {"token": session.token, "expires_at": session.expires_at.isoformat()}
    except WorkerHandshakeRejectionError as e:
        return {"peer_reason": int(e.reason)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"peer_error": type(e).__name__}


def scenario(name, key, scheduler_pub):
    cfg = config(key, scheduler_pub)
    if name == "ok":
        request, reply, verified = challenged(cfg)
        digest(request)
        digest(unmarshal_worker_trust_packet(reply))
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        digest(auth)
        reply = exchange("authenticate", ser(auth))
        digest(unmarshal_worker_trust_packet(reply))
        first = peer_result(cfg, verified, auth, reply)
        _, _, verified = challenged(cfg, RENEW)
        auth = build_authenticate(cfg, verified, capability(cfg), first["token"], now())
        second = peer_result(cfg, verified, auth, exchange("authenticate", ser(auth)))
        return {"first": first, "second": second}

    # Challenge-phase defects: one request, the reason we answered, and the peer's view.
    if name in ("tampered", "wrong_key", "unknown_key", "skewed", "unknown_field",
                "wrong_audience", "version_2", "version_999", "payload_version_2",
                "identity", "replayed_request"):
        c = cfg
        created = None
        if name == "wrong_key":
            c = config(ec.generate_private_key(ec.SECP256R1()), scheduler_pub)
        elif name == "unknown_key":
            c = config(key, scheduler_pub, key_id="k-unknown")
        elif name == "identity":
            c = config(key, scheduler_pub, worker_id="w-9")
        elif name == "skewed":
            created = now() - timedelta(minutes=5)
        request = build_challenge_request(c, options(created_at=created))
        if name == "tampered":
            request.worker_handshake_challenge_request.sdk_version = "tampered"
        elif name == "wrong_audience":
            request.worker_handshake_challenge_request.audience = "someone-else"
            sign_trust_packet(request, key)
        elif name in ("version_2", "version_999"):
            request.protocol_version = 2 if name == "version_2" else 999
            sign_trust_packet(request, key)
        elif name == "payload_version_2":
            request.worker_handshake_challenge_request.protocol_version = 2
            sign_trust_packet(request, key)
        data = ser(request)
        if name == "unknown_field":
            data += b"\xf8\x01\x01"  # field 31, varint 1: after signing, as a newer peer
        if name == "replayed_request":
            exchange("challenge", data)
        reply = exchange("challenge", data)
        try:
            # The peer's own codec accepts our refusal as a well-formed trust packet...
            parsed = unmarshal_worker_trust_packet(reply)
            peer_parses = True
        except Exception:  # noqa: BLE001
            parsed, peer_parses = None, False
        try:
            # ...which its challenge check then refuses (it is not a challenge).
            verify_challenge(c, request, parsed, now())
            peer = "accepted"
        except Exception as e:  # noqa: BLE001
            peer = type(e).__name__
        return {"reason": reason_of(reply), "peer_error": peer, "peer_parses": peer_parses}

    # Authenticate-phase defects: a real challenge first.
    request, reply, verified = challenged(cfg)
    if name == "expired":
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        reply = exchange("authenticate", ser(auth), at=31)
    elif name == "replayed":
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        exchange("authenticate", ser(auth))
        reply = exchange("authenticate", ser(auth))
    elif name == "nonce":
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        ch = auth.worker_handshake_authenticate.challenge
        ch.server_nonce = bytes([ch.server_nonce[0] ^ 1]) + ch.server_nonce[1:]
        sign_trust_packet(auth, key)
        reply = exchange("authenticate", ser(auth))
    elif name == "auth_version_999":
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        auth.protocol_version = 999
        sign_trust_packet(auth, key)
        reply = exchange("authenticate", ser(auth))
    elif name in ("session_required", "session_invalid"):
        _, _, verified = challenged(cfg, RENEW)
        auth = build_authenticate(cfg, verified, capability(cfg), "cap-ws.bogus", now())
        sent = auth
        if name == "session_required":
            # The peer's verify_result checks the authenticate it sent before our
            # answer; it is given the well-formed original (same challenge).
            sent = buspacket_pb2.BusPacket()
            sent.CopyFrom(auth)
            sent.ClearField("auth_token")
            sign_trust_packet(sent, key)
        reply = exchange("authenticate", ser(sent))
    elif name == "internal":
        auth = build_authenticate(cfg, verified, capability(cfg), "", now())
        reply = exchange("authenticate", ser(auth))
    else:
        raise SystemExit("unknown scenario " + name)
    out = peer_result(cfg, verified, auth, reply)
    out["reason"] = reason_of(reply)
    return out


def main():
    name, key_path, pub_path = sys.argv[1:4]
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(pub_path, "rb") as f:
        scheduler_pub = serialization.load_pem_public_key(f.read())
    result = scenario(name, key, scheduler_pub)
    result["op"] = "done"
    send(result)


if __name__ == "__main__":
    main()
