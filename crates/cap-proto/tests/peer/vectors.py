"""Builds CAP messages with the reference peer (cap-sdk-python) and prints test vectors.

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

TYPES = {}
for mod in (alert_pb2, buspacket_pb2, handshake_pb2, heartbeat_pb2, job_pb2, safety_pb2):
    for name, desc in mod.DESCRIPTOR.message_types_by_name.items():
        TYPES[desc.full_name] = getattr(mod, name)


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
