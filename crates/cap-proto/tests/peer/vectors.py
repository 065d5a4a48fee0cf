"""Builds CAP messages with the reference peer (cap-sdk-python) and prints test vectors.

Works with 2.10.0 and 2.17.0: the vectors of fields and messages that came after 2.10.0
are made only when the peer's schema has them (2.17.0).

Modes:
  vectors.py make          -> JSON lines {name, type, hex, json} (hex = deterministic bytes)
  vectors.py parse FILE    -> for each JSON line {type, json} in FILE, the peer parses the
                              JSON and prints {type, hex} of its deterministic bytes
"""
import json
import sys

from google.protobuf import json_format
from cap.pb.cordum.agent.v1 import (
    alert_pb2,
    buspacket_pb2,
    handshake_pb2,
    heartbeat_pb2,
    job_pb2,
    safety_pb2,
)

try:
    from cap.pb.cordum.agent.v1 import policy_pb2
except ImportError:  # 2.10.0
    policy_pb2 = None

MODULES = [alert_pb2, buspacket_pb2, handshake_pb2, heartbeat_pb2, job_pb2, safety_pb2]
if policy_pb2 is not None:
    MODULES.append(policy_pb2)
TYPES = {}
for mod in MODULES:
    for name, desc in mod.DESCRIPTOR.message_types_by_name.items():
        TYPES[desc.full_name] = getattr(mod, name)

# The 2.17.0 schema (BusPacket 5/6, identity/dispatch/resource references, policy.proto).
HAS_217 = "identity" in buspacket_pb2.BusPacket.DESCRIPTOR.fields_by_name

# Map keys that are prefixes of one another (and the empty key): the peer writes the
# longer key first (abc, ab, a, ba, b, ..., x, "").
PREFIX_KEYS = {"a": "1", "ab": "2", "abc": "3", "b": "4", "ba": "5", "": "e", "team": "t", "team_id": "ti", "x": "y"}


def packet(**payload):
    p = buspacket_pb2.BusPacket(trace_id="trace-1", sender_id="sender-1", protocol_version=1)
    p.created_at.seconds = 1_700_000_123
    p.created_at.nanos = 456_000_000
    for k, v in payload.items():
        getattr(p, k).CopyFrom(v)
    return p


def meta():
    return job_pb2.JobMetadata(
        tenant_id="acme",
        actor_id="alice",
        actor_type=job_pb2.ACTOR_TYPE_SERVICE,
        idempotency_key="idem-1",
        capability="code.review",
        risk_tags=["network", "secrets"],
        requires=["gpu", "python"],
        pack_id="pack-9",
        labels={"zeta": "", "alpha": "1", "Beta": "two"},
    )


def job_request():
    r = job_pb2.JobRequest(
        job_id="job-1",
        topic="job.echo",
        priority=job_pb2.JOB_PRIORITY_CRITICAL,
        context_ptr="redis://ctx:job-1",
        adapter_id="adapter",
        env={"PATH": "/bin", "EMPTY": "", "a": "x"},
        parent_job_id="parent-0",
        workflow_id="wf-1",
        step_index=3,
        memory_id="mem-1",
        tenant_id="acme",
        principal_id="p-1",
        labels={"z": "1", "a": "", "m": "mid"},
    )
    r.context_hints.max_input_tokens = 1000
    r.context_hints.allow_summarization = True
    r.context_hints.tags.extend(["t1", "t2"])
    r.budget.max_input_tokens = 10
    r.budget.max_output_tokens = 20
    r.budget.max_total_tokens = 10_000_000_000
    r.budget.deadline_ms = 5000
    r.meta.CopyFrom(meta())
    c = r.compensation
    c.topic = "job.undo"
    c.context_ptr = "redis://ctx:undo-1"
    c.priority = job_pb2.JOB_PRIORITY_BATCH
    c.env["k"] = ""
    c.labels["undo"] = "yes"
    c.budget.deadline_ms = 1
    c.meta.CopyFrom(meta())
    c.context_hints.allow_retrieval = True
    return r


def vectors():
    out = []
    out.append(("job_request_full", packet(job_request=job_request())))
    res = job_pb2.JobResult(
        job_id="job-1",
        status=job_pb2.JOB_STATUS_FAILED_RETRYABLE,
        result_ptr="redis://res:job-1",
        worker_id="worker-1",
        execution_ms=1234567890123,
        error_code="TIMEOUT",
        error_message="took too long",
        artifact_ptrs=["redis://a:1", "s3://b/k"],
        error_code_enum=job_pb2.ERROR_CODE_JOB_TIMEOUT,
    )
    out.append(("job_result", packet(job_result=res)))
    hb = heartbeat_pb2.Heartbeat(
        worker_id="worker-1",
        region="eu",
        type="cpu",
        cpu_load=12.5,
        gpu_utilization=0.0,
        active_jobs=2,
        capabilities=["progress", "cancel"],
        pool="job.echo",
        max_parallel_jobs=8,
        labels={"zone": "a", "gpu": ""},
        memory_load=99.9,
        progress_pct=40,
        last_memo="memo",
        auth_token="tok",
    )
    out.append(("heartbeat", packet(heartbeat=hb)))
    al = alert_pb2.SystemAlert(
        level="ERROR",
        message="bad signature",
        component="worker",
        code="SIG",
        severity=alert_pb2.ALERT_SEVERITY_CRITICAL,
        error_code_enum=job_pb2.ERROR_CODE_PROTOCOL_SIGNATURE_INVALID,
        source_component="cap-rs",
        details={"b": "x", "a": ""},
        trace_id="trace-1",
    )
    out.append(("alert", packet(alert=al)))
    pr = job_pb2.JobProgress(
        job_id="job-1",
        step_id="s1",
        percent=50,
        message="half",
        result_ptr="redis://res:job-1",
        artifact_ptrs=["redis://p:1"],
        status=job_pb2.JOB_STATUS_RUNNING,
    )
    out.append(("job_progress", packet(job_progress=pr)))
    out.append(("job_cancel", packet(job_cancel=job_pb2.JobCancel(job_id="job-1", reason="user", requested_by="alice"))))
    hs = handshake_pb2.Handshake(
        component_id="sender-1",
        role=handshake_pb2.COMPONENT_ROLE_WORKER,
        supported_versions=[1, 2],
        capabilities={"signatures": True, "cancel": False, "progress": False, "x-gpu": True},
        sdk_version="cap-sdk-python/2.10.0",
        ready_topics=["job.a", "job.b"],
    )
    out.append(("handshake", packet(handshake=hs)))
    # Negative numbers, defaults and empty sub-messages.
    neg = job_pb2.JobRequest(job_id="n", step_index=-7, priority=-1)
    neg.budget.SetInParent()
    neg.context_hints.max_input_tokens = -1
    out.append(("job_request_negative", packet(job_request=neg)))
    hb2 = heartbeat_pb2.Heartbeat(worker_id="w", cpu_load=-0.0, active_jobs=-3, progress_pct=-1)
    out.append(("heartbeat_negative", packet(heartbeat=hb2)))
    hs2 = handshake_pb2.Handshake(supported_versions=[-1, 0, 2147483647], capabilities={"": False})
    out.append(("handshake_edge", hs2))
    out.append(("empty_packet", buspacket_pb2.BusPacket()))
    unk = job_pb2.JobResult(job_id="u", status=99, error_code_enum=4242)
    out.append(("job_result_unknown_enums", packet(job_result=unk)))
    # Standalone messages.
    req = safety_pb2.PolicyCheckRequest(
        job_id="job-1",
        topic="job.echo",
        tenant="acme",
        priority=job_pb2.JOB_PRIORITY_INTERACTIVE,
        estimated_cost=0.25,
        principal_id="p",
        labels={"mcp.tool": "shell", "secrets_present": "true", "e": ""},
        memory_id="m",
        effective_config=b"\x00\x01\xffrules: []",
        input_content=b"{}",
        input_content_type="application/json",
        input_size_bytes=2,
    )
    req.budget.deadline_ms = 10
    req.meta.CopyFrom(meta())
    out.append(("policy_check_request", req))
    resp = safety_pb2.PolicyCheckResponse(
        decision=safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS,
        reason="ok",
        redacted_context_ptr="redis://ctx:red",
        policy_snapshot="sha256:abc@v1",
        rule_id="r1",
        approval_required=True,
        approval_ref="job-1",
    )
    resp.constraints.budgets.max_runtime_ms = 1000
    resp.constraints.budgets.max_retries = 3
    resp.constraints.sandbox.isolated = True
    resp.constraints.sandbox.network_allowlist.extend(["a.example"])
    resp.constraints.toolchain.allowed_tools.extend(["git"])
    resp.constraints.diff.max_files = 10
    resp.constraints.diff.deny_path_globs.extend(["*.pem"])
    resp.constraints.redaction_level = "high"
    rem = resp.remediations.add(id="rem1", title="t", summary="s", replacement_topic="job.safe")
    rem.add_labels["b"] = ""
    rem.add_labels["a"] = "1"
    rem.remove_labels.extend(["x"])
    out.append(("policy_check_response", resp))
    out.append(("list_snapshots", safety_pb2.ListSnapshotsResponse(snapshots=["s2", "s1"])))
    # Every map with keys that are prefixes of one another.
    pk = job_pb2.JobRequest(job_id="job-pk", topic="job.echo", labels=PREFIX_KEYS, env=PREFIX_KEYS)
    pk.meta.labels.update(PREFIX_KEYS)
    pk.compensation.topic = "job.undo"
    pk.compensation.env.update(PREFIX_KEYS)
    pk.compensation.labels.update(PREFIX_KEYS)
    out.append(("prefix_keys_job_request", packet(job_request=pk)))
    hbk = heartbeat_pb2.Heartbeat(worker_id="sender-1", labels=PREFIX_KEYS)
    out.append(("prefix_keys_heartbeat", packet(heartbeat=hbk)))
    alk = alert_pb2.SystemAlert(level="INFO", message="m", component="c", code="X", details=PREFIX_KEYS)
    out.append(("prefix_keys_alert", packet(alert=alk)))
    hsk = handshake_pb2.Handshake(component_id="sender-1", role=handshake_pb2.COMPONENT_ROLE_WORKER,
                                  supported_versions=[1], capabilities={k: True for k in PREFIX_KEYS})
    out.append(("prefix_keys_handshake", packet(handshake=hsk)))
    if HAS_217:
        out.extend(vectors_217())
    return out


def identity():
    return job_pb2.IdentityBinding(tenant_id="acme", principal_id="p-1", actor_id="alice", delegation_id="d-1")


def dispatch():
    return job_pb2.DispatchIdentity(dispatch_id="disp-1", attempt=18446744073709551615, assigned_worker_id="worker-1")


def resource(uri):
    r = job_pb2.ResourceRef(
        resolver_id="redis",
        uri=uri,
        sha256=bytes(range(32)),
        media_type="application/json",
        size_bytes=1234,
        purpose="context",
    )
    r.expires_at.seconds = 1_700_000_999
    r.expires_at.nanos = 1
    return r


def vectors_217():
    out = []
    r = job_request()
    r.labels.update(PREFIX_KEYS)
    r.identity.CopyFrom(identity())
    r.dispatch.CopyFrom(dispatch())
    r.context_ref.CopyFrom(resource("redis://ctx:job-1"))
    r.compensation.identity.CopyFrom(identity())
    r.compensation.dispatch.CopyFrom(job_pb2.DispatchIdentity(attempt=1))
    r.compensation.context_ref.CopyFrom(resource("redis://ctx:undo-1"))
    p = packet(job_request=r)
    p.identity.CopyFrom(identity())
    p.signature_metadata.profile_version = "cap-production-v1"
    p.signature_metadata.algorithm = "ECDSA-P256-SHA256"
    p.signature_metadata.message_id = bytes(range(16))
    p.signature_metadata.audience = "job.echo"
    p.signature_metadata.expires_at.seconds = 1_700_000_423
    p.signature_metadata.key_id = "key-1"
    p.auth_token = "session-token"
    out.append(("job_request_217", p))
    res = job_pb2.JobResult(job_id="job-1", status=job_pb2.JOB_STATUS_SUCCEEDED, worker_id="sender-1")
    res.dispatch.CopyFrom(dispatch())
    res.identity.CopyFrom(identity())
    res.result_ref.CopyFrom(resource("redis://res:job-1"))
    res.artifact_refs.append(resource("redis://a:1"))
    res.artifact_refs.append(job_pb2.ResourceRef())
    out.append(("job_result_217", packet(job_result=res)))
    pr = job_pb2.JobProgress(job_id="job-1", percent=10, status=job_pb2.JOB_STATUS_RUNNING)
    pr.dispatch.CopyFrom(dispatch())
    pr.identity.CopyFrom(identity())
    pr.result_ref.CopyFrom(resource("redis://res:job-1"))
    pr.artifact_refs.append(resource("redis://p:1"))
    out.append(("job_progress_217", packet(job_progress=pr)))
    c = job_pb2.JobCancel(job_id="job-1", reason="user", requested_by="alice")
    c.dispatch.CopyFrom(dispatch())
    c.identity.CopyFrom(identity())
    out.append(("job_cancel_217", packet(job_cancel=c)))
    hb = heartbeat_pb2.Heartbeat(worker_id="sender-1", agent_name="agent-x", labels=PREFIX_KEYS)
    out.append(("heartbeat_217", packet(heartbeat=hb)))
    hs = handshake_pb2.Handshake(component_id="sender-1", role=handshake_pb2.COMPONENT_ROLE_WORKER,
                                 supported_versions=[1], agent_name="agent-x")
    out.append(("handshake_217", packet(handshake=hs)))
    # The worker trust handshake, one packet per phase.
    ch = handshake_pb2.WorkerHandshakeChallenge(
        request_id="req-1", challenge_id="ch-1", trace_id="trace-1", worker_id="sender-1",
        agent_id="agent-1", tenant_id="acme", proof_key_id="wk-1",
        proof_algorithm=handshake_pb2.WORKER_HANDSHAKE_PROOF_ALGORITHM_ECDSA_P256_SHA256,
        server_key_id="sk-1", audience="cordum-scheduler",
        purpose=handshake_pb2.WORKER_HANDSHAKE_PURPOSE_ISSUE, client_nonce=bytes(32),
        server_nonce=bytes(range(32)), protocol_version=1, sdk_version="cap-sdk-python/2.17.0",
    )
    ch.issued_at.seconds = 1_700_000_100
    ch.expires_at.seconds = 1_700_000_160
    req = handshake_pb2.WorkerHandshakeChallengeRequest(
        request_id="req-1", trace_id="trace-1", worker_id="sender-1", proof_key_id="wk-1",
        proof_algorithm=handshake_pb2.WORKER_HANDSHAKE_PROOF_ALGORITHM_ECDSA_P256_SHA256,
        audience="cordum-scheduler", purpose=handshake_pb2.WORKER_HANDSHAKE_PURPOSE_RENEW,
        client_nonce=bytes(32), protocol_version=1, sdk_version="cap-sdk-python/2.17.0",
    )
    out.append(("trust_challenge_request", packet(worker_handshake_challenge_request=req)))
    out.append(("trust_challenge", packet(worker_handshake_challenge=ch)))
    auth = handshake_pb2.WorkerHandshakeAuthenticate()
    auth.challenge.CopyFrom(ch)
    auth.capability_handshake.CopyFrom(handshake_pb2.Handshake(
        component_id="sender-1", role=handshake_pb2.COMPONENT_ROLE_WORKER, supported_versions=[1],
        capabilities={"progress": True, "cancel": True}, sdk_version="cap-sdk-python/2.17.0",
        ready_topics=["job.echo"],
    ))
    out.append(("trust_authenticate", packet(worker_handshake_authenticate=auth)))
    result = handshake_pb2.WorkerHandshakeResult(accepted=True)
    result.challenge.CopyFrom(ch)
    result.issued_at.seconds = 1_700_000_120
    result.token_expires_at.seconds = 1_700_003_720
    out.append(("trust_result", packet(worker_handshake_result=result)))
    req2 = safety_pb2.PolicyCheckRequest(job_id="job-1", topic="job.echo", labels=PREFIX_KEYS)
    req2.identity.CopyFrom(identity())
    req2.input_ref.CopyFrom(resource("redis://ctx:job-1"))
    out.append(("policy_check_request_217", req2))
    resp2 = safety_pb2.PolicyCheckResponse(decision=safety_pb2.DECISION_TYPE_ALLOW)
    resp2.redacted_context_ref.CopyFrom(resource("redis://ctx:red"))
    resp2.identity.CopyFrom(identity())
    out.append(("policy_check_response_217", resp2))
    # policy.proto, including google.protobuf.Struct members.
    ev = policy_pb2.PolicyEvaluateRequest(bundle_id="b-1")
    ev.rule.id = "r-1"
    ev.rule.name = "deny shell"
    ev.rule.type = policy_pb2.RULE_TYPE_INPUT
    ev.rule.scope.kind = policy_pb2.RULE_SCOPE_KIND_TENANT
    ev.rule.scope.value = "acme"
    ev.rule.status = policy_pb2.RULE_STATUS_PUBLISHED
    ev.rule.audit.created_at.seconds = 1_700_000_000
    ev.rule.audit.created_by = "alice"
    ev.rule.match.update({"topic": "job.shell", "n": 2.5, "b": True, "none": None, "list": [1, "x"], "obj": {"ab": 1, "a": 2}})
    ev.rule.decide.update({"decision": "deny"})
    ev.job_context.tenant_id = "acme"
    ev.job_context.labels.update(PREFIX_KEYS)
    ev.job_context.risk_tags.extend(["net"])
    ev.job_context.input_content = b"\x00{}"
    ev.job_context.input_size_bytes = 3
    ev.edge_context.tool_name = "shell"
    ev.edge_context.labels.update(PREFIX_KEYS)
    ev.edge_context.tool_input_redacted.update({"cmd": "ls"})
    out.append(("policy_evaluate_request", ev))
    dec = policy_pb2.PolicyEvaluateResponse()
    dec.decision.source = policy_pb2.DECISION_SOURCE_JOB
    dec.decision.type = safety_pb2.DECISION_TYPE_DENY
    step = dec.decision.trace.add(rule_id="r-1", reason="matched")
    step.timestamp.seconds = 1_700_000_001
    step.constraints.update({"max": 3})
    dec.decision.timestamp.seconds = 1_700_000_002
    out.append(("policy_evaluate_response", dec))
    bundle = policy_pb2.Bundle(id="b-1", name="bundle", rule_ids=["r-1", "r-2"])
    bundle.scope_binding.kind = policy_pb2.RULE_SCOPE_KIND_GLOBAL
    v = bundle.versions.add(version="v1", audit_hash="h")
    v.rule_snapshot.add(id="r-1")
    v.deployed_at.seconds = 1_700_000_003
    bundle.metadata.edge_mode = policy_pb2.EDGE_MODE_ENFORCE
    out.append(("bundle", bundle))
    return out


def main():
    if sys.argv[1] == "make":
        for name, msg in vectors():
            print(json.dumps({
                "name": name,
                "type": msg.DESCRIPTOR.full_name,
                "hex": msg.SerializeToString(deterministic=True).hex(),
                "json": json_format.MessageToJson(msg),
            }))
    elif sys.argv[1] == "parse":
        with open(sys.argv[2]) as f:
            for line in f:
                item = json.loads(line)
                msg = TYPES[item["type"]]()
                json_format.Parse(item["json"], msg)
                print(json.dumps({"type": item["type"], "hex": msg.SerializeToString(deterministic=True).hex()}))


if __name__ == "__main__":
    main()
