"""Calls a Safety Kernel with the grpcio stubs shipped in cap-sdk-python 2.10.0.

Usage: safety_client.py HOST:PORT
Prints one JSON object with the answers, for the Rust test to check.
"""
import json
import sys

import grpc
from google.protobuf import json_format
from cap.pb.cordum.agent.v1 import job_pb2, safety_pb2, safety_pb2_grpc


def main() -> None:
    channel = grpc.insecure_channel(sys.argv[1])
    grpc.channel_ready_future(channel).result(timeout=15)
    stub = safety_pb2_grpc.SafetyKernelStub(channel)

    def req(topic, job_id="py-1", **kw):
        meta = kw.pop("meta", None)
        r = safety_pb2.PolicyCheckRequest(job_id=job_id, topic=topic, **kw)
        if meta is not None:
            r.meta.CopyFrom(job_pb2.JobMetadata(**meta))
        return r

    def as_json(msg):
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    out = {}
    out["deny"] = as_json(stub.Check(req("job.admin.reset", tenant="Acme")))
    out["approval"] = as_json(stub.Evaluate(req("job.pay.out", job_id="py-approve")))
    out["constrained"] = as_json(
        stub.Check(req("job.build", meta={"capability": "Build", "risk_tags": ["net"]}))
    )
    out["mcp"] = as_json(stub.Check(req("job.mcp.call", labels={"mcp.tool": "rm"})))
    out["default"] = as_json(stub.Check(req("job.other")))
    out["explain"] = as_json(stub.Explain(req("job.admin.reset")))
    out["simulate"] = as_json(
        stub.Simulate(
            req(
                "job.admin.reset",
                effective_config=b"version: cand\nrules:\n  - id: open\n    decision: allow\n",
            )
        )
    )
    try:
        stub.Simulate(req("job.x", effective_config=b"rules: [{id: a, nope: 1}]"))
        out["bad_simulate"] = "accepted"
    except grpc.RpcError as e:
        out["bad_simulate"] = {"code": e.code().name, "details": e.details()}
    out["snapshots"] = list(stub.ListSnapshots(safety_pb2.ListSnapshotsRequest()).snapshots)
    # The reference enum names, so the Rust side can compare wire values by name.
    out["enum"] = {v.name: v.number for v in safety_pb2.DecisionType.DESCRIPTOR.values}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
