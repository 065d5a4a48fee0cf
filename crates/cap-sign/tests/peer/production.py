"""CAP-PRODUCTION interop with the reference peer (cap-sdk-python 2.17.0), through its own
production_signing / production_events / production_validation / production_replay code.

  production.py make OUTDIR NOW_US   writes OUTDIR/peer.pem; prints {name, hex, audience}
                                     lines: one packet per payload type sealed by
                                     seal_production_event and one signed by
                                     sign_production_packet, at NOW_US (µs since epoch)
  production.py verify FILE          for each {name, hex, audience, tenant, sender, key_id,
                                     pem, now_us[, skew_s, max_lifetime_s]} line, runs
                                     verify_production_packet (then validate_identity_binding
                                     for a job request); prints {name, ok, error}
  production.py admit FILE           runs each line through admit_production_event with one
                                     shared InMemoryReplayStore and the real clock; prints
                                     {name, outcome} (first, duplicate or the error)
"""
import json
import os
import sys
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "cap-proto", "tests", "peer"))
import vectors  # noqa: E402  (the shared message builders)

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cap.pb.cordum.agent.v1 import buspacket_pb2, handshake_pb2, job_pb2  # noqa: E402
from cap.production_events import admit_production_event, seal_production_event  # noqa: E402
from cap.production_replay import InMemoryReplayStore  # noqa: E402
from cap.production_signing import (  # noqa: E402
    ALGORITHM,
    PROFILE_VERSION,
    ProductionTrust,
    sign_production_packet,
    verify_production_packet,
)
from cap.production_validation import validate_identity_binding  # noqa: E402

SENDER = "peer-sender"
KEY_ID = "peer-key"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def at(now_us):
    return EPOCH + timedelta(microseconds=int(now_us))


def identity():
    return job_pb2.IdentityBinding(tenant_id="acme", principal_id="p-1", actor_id="alice")


def dispatch():
    return job_pb2.DispatchIdentity(dispatch_id="d-7f3a", attempt=2, assigned_worker_id="worker-1")


def challenge():
    c = handshake_pb2.WorkerHandshakeChallenge(
        request_id="r-1",
        challenge_id="c-1",
        trace_id="trace-1",
        worker_id="worker-1",
        tenant_id="acme",
        proof_key_id="pk-1",
        proof_algorithm=1,
        server_key_id="sk-1",
        audience="sys.worker.handshake.authenticate",
        client_nonce=b"\x01" * 32,
        server_nonce=b"\x02" * 32,
        protocol_version=1,
        sdk_version="cap-sdk-python/2.17.0",
    )
    c.issued_at.seconds = 1_700_000_000
    c.expires_at.seconds = 1_700_000_060
    return c


def payloads():
    out = []
    for name, msg in vectors.vectors():
        if msg.DESCRIPTOR.full_name == "cordum.agent.v1.BusPacket" and msg.WhichOneof("payload"):
            out.append((name, msg))
    # 2.17 fields on the job payloads.
    p = vectors.packet(job_request=vectors.job_request())
    p.job_request.identity.CopyFrom(identity())
    p.job_request.dispatch.CopyFrom(dispatch())
    p.job_request.context_ref.resolver_id = "redis"
    p.job_request.context_ref.uri = "redis://ctx:job-1"
    p.job_request.context_ref.sha256 = b"\xaa" * 32
    p.job_request.context_ref.size_bytes = 12
    out.append(("job_request_2_17", p))
    r = vectors.packet(job_result=job_pb2.JobResult(job_id="job-1", status=job_pb2.JOB_STATUS_SUCCEEDED, worker_id=SENDER))
    r.job_result.dispatch.CopyFrom(dispatch())
    r.job_result.identity.CopyFrom(identity())
    r.job_result.result_ref.uri = "redis://res:job-1"
    r.job_result.artifact_refs.add(uri="s3://b/k", media_type="text/plain")
    out.append(("job_result_2_17", r))
    pr = vectors.packet(job_progress=job_pb2.JobProgress(job_id="job-1", percent=10))
    pr.job_progress.dispatch.CopyFrom(dispatch())
    out.append(("job_progress_2_17", pr))
    cn = vectors.packet(job_cancel=job_pb2.JobCancel(job_id="job-1", reason="r"))
    cn.job_cancel.dispatch.CopyFrom(dispatch())
    cn.job_cancel.identity.CopyFrom(identity())
    out.append(("job_cancel_2_17", cn))
    # The four worker-trust payloads.
    req = handshake_pb2.WorkerHandshakeChallengeRequest(
        request_id="r-1", trace_id="trace-1", worker_id="worker-1", proof_key_id="pk-1",
        proof_algorithm=1, audience="sys.worker.handshake.challenge", purpose=1,
        client_nonce=b"\x01" * 32, protocol_version=1, sdk_version="cap-sdk-python/2.17.0",
    )
    out.append(("worker_handshake_challenge_request", vectors.packet(worker_handshake_challenge_request=req)))
    out.append(("worker_handshake_challenge", vectors.packet(worker_handshake_challenge=challenge())))
    auth = handshake_pb2.WorkerHandshakeAuthenticate()
    auth.challenge.CopyFrom(challenge())
    auth.capability_handshake.component_id = "worker-1"
    auth.capability_handshake.capabilities["cancel"] = True
    out.append(("worker_handshake_authenticate", vectors.packet(worker_handshake_authenticate=auth)))
    res = handshake_pb2.WorkerHandshakeResult(accepted=True)
    res.challenge.CopyFrom(challenge())
    res.token_expires_at.seconds = 1_700_003_600
    out.append(("worker_handshake_result", vectors.packet(worker_handshake_result=res)))
    for _, msg in out:
        msg.sender_id = SENDER
        msg.identity.CopyFrom(identity())
        # The envelope identity is authoritative: a job request's own mirrors of it (the
        # shared vectors set some) must agree, or both sides refuse it by design.
        if msg.WhichOneof("payload") == "job_request":
            bind(msg.job_request)
    return out


def bind(req):
    who = identity()
    if req.HasField("identity"):
        req.identity.CopyFrom(who)
    if req.tenant_id:
        req.tenant_id = who.tenant_id
    if req.principal_id:
        req.principal_id = who.principal_id
    if req.HasField("meta"):
        if req.meta.tenant_id:
            req.meta.tenant_id = who.tenant_id
        if req.meta.actor_id:
            req.meta.actor_id = who.actor_id
    if req.env.get("tenant_id"):
        req.env["tenant_id"] = who.tenant_id
    if req.env.get("principal_id"):
        req.env["principal_id"] = who.principal_id


def make(outdir, now_us):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(os.path.join(outdir, "peer.pem"), "wb") as f:
        f.write(pem)
    now = at(now_us)
    for name, msg in payloads():
        audience = "aud." + name
        raw = seal_production_event(
            msg, key=key, key_id=KEY_ID, audience=audience,
            lifetime=timedelta(minutes=2), now=lambda: now,
        )
        print(json.dumps({"name": name + "/seal", "hex": raw.hex(), "audience": audience}))
        # The lower-level signer, with metadata the caller fills in.
        signed = buspacket_pb2.BusPacket()
        signed.CopyFrom(msg)
        m = signed.signature_metadata
        m.profile_version = PROFILE_VERSION
        m.algorithm = ALGORITHM
        m.message_id = os.urandom(16)
        m.audience = audience
        m.key_id = KEY_ID
        # sign_production_packet checks the expiry against the real clock.
        m.expires_at.FromDatetime(datetime.now(timezone.utc) + timedelta(minutes=4))
        raw = sign_production_packet(signed, key)
        print(json.dumps({"name": name + "/sign", "hex": raw.hex(), "audience": audience}))


def trust_of(item):
    with open(item["pem"], "rb") as f:
        public_key = serialization.load_pem_public_key(f.read())
    now = at(item["now_us"])
    kwargs = {}
    if "skew_s" in item:
        kwargs["clock_skew"] = timedelta(seconds=item["skew_s"])
    if "max_lifetime_s" in item:
        kwargs["max_lifetime"] = timedelta(seconds=item["max_lifetime_s"])
    return ProductionTrust(
        audience=item["audience"],
        public_keys={item["key_id"]: public_key},
        tenant=item["tenant"],
        sender=item["sender"],
        now=lambda: now,
        **kwargs,
    )


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def verify(path):
    for item in lines(path):
        try:
            packet = verify_production_packet(bytes.fromhex(item["hex"]), trust_of(item))
            if packet.HasField("job_request") and packet.HasField("identity"):
                validate_identity_binding(packet.job_request, packet.identity)
            print(json.dumps({"name": item["name"], "ok": True, "error": ""}))
        except Exception as exc:  # every rejection, reported by message
            print(json.dumps({"name": item["name"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}))


def admit(path):
    store = InMemoryReplayStore()
    for item in lines(path):
        ran = []
        try:
            packet = admit_production_event(
                bytes.fromhex(item["hex"]), trust=trust_of(item), replay=store, handler=ran.append,
            )
            outcome = "first" if packet is not None and len(ran) == 1 else "duplicate"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"name": item["name"], "outcome": outcome}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "verify":
        verify(sys.argv[2])
    elif sys.argv[1] == "admit":
        admit(sys.argv[2])
