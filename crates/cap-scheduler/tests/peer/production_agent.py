"""A cap-sdk-python 2.17.0 Agent in CAP-PRODUCTION mode (the reference peer's worker).

Runs `Agent(worker_trust_mode="enforce", worker_trust=WorkerTrustConfig(...),
production_trust=ProductionTrust(...), replay_store=InMemoryReplayStore())` with one
echo handler on TOPIC: it authenticates with the scheduler's trust service, admits only
production packets sealed by SCHEDULER_ID with the scheduler key for tenant TENANT and
the subject they arrive on (verified on the exact wire bytes, identity binding, replay
admission, before the handler), and seals its results with its proof key for
`sys.job.result`, echoing the admitted request's identity and dispatch. Prints one line
per handled job on stderr ("RAN <job_id> <dispatch_id> <attempt>"), "READY" once
started, "FAILED <error type>" if start fails; runs until stdin closes or SIGTERM.

usage: production_agent.py NATS_URL REDIS_URL TOPIC WORKER_ID PROOF_KEY.pem
       SCHEDULER_ID SERVER_KEY_ID=SCHEDULER_PUB.pem TENANT
"""
import asyncio
import logging
import signal
import sys
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from cap.production_replay import InMemoryReplayStore
from cap.production_signing import ProductionTrust
from cap.runtime import Agent
from cap.worker_trust import WorkerTrustConfig


async def main() -> int:
    nats_url, redis_url, topic, worker_id, key_path, scheduler_id, sched, tenant = sys.argv[1:9]
    logging.getLogger("cap.runtime").setLevel(logging.ERROR)
    logging.getLogger("cap.worker_trust").setLevel(logging.ERROR)
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    key_id, pub_path = sched.split("=", 1)
    with open(pub_path, "rb") as f:
        scheduler_pub = serialization.load_pem_public_key(f.read())
    config = WorkerTrustConfig(
        worker_id=worker_id, expected_agent_id=worker_id, tenant_id=tenant,
        audience="cordum-scheduler", proof_key_id=worker_id, proof_private_key=key,
        expected_scheduler_id=scheduler_id, scheduler_public_keys={key_id: scheduler_pub},
        sdk_version="cap-python/2.17.0",
    )
    trust = ProductionTrust(
        audience=topic, public_keys={key_id: scheduler_pub}, tenant=tenant,
        sender=scheduler_id, clock_skew=timedelta(seconds=30),
    )
    agent = Agent(
        nats_url=nats_url, redis_url=redis_url, worker_id=worker_id, max_parallel=8,
        heartbeat_interval=0.5, worker_trust_mode="enforce", worker_trust=config,
        worker_trust_timeout=5.0, production_trust=trust,
        replay_store=InMemoryReplayStore(),
    )

    @agent.job(topic)
    async def echo(ctx, data):
        d = ctx.job.dispatch
        print(f"RAN {ctx.job.job_id} {d.dispatch_id} {d.attempt}", file=sys.stderr, flush=True)
        return data

    try:
        await agent.start()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        print("FAILED " + type(exc).__name__ + ": " + str(exc), flush=True)
        return 1
    await agent._nc.flush()
    print("READY " + ("session" if agent.session_token else "none"), flush=True)

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
