//! What the gateway reads: the per-tenant job index of the stores (memory and Redis),
//! the decisions kept in a record, and the job state events on the bus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_bus::{Bus, MemoryBus};
use cap_proto::{JobState, v1};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::JobRecord;
use cap_scheduler::shell::{Commit, JobStateEvent, events_subject};
use cap_scheduler::{JobStore, MemoryJobStore, RedisJobStore, Scheduler, SchedulerOptions};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn record(id: &str, tenant: &str, created: u64) -> JobRecord {
    let request = v1::JobRequest {
        job_id: id.into(),
        topic: "job.x".into(),
        tenant_id: tenant.into(),
        ..Default::default()
    };
    JobRecord::new(request, "t".into(), "c".into(), created)
}

/// Pages through a tenant's jobs `size` at a time; returns the ids in order.
async fn pages<S: JobStore>(store: &S, tenant: &str, size: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .tenant_jobs(tenant, cursor.clone(), size)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|r| (r.created(), r.id().to_owned()));
        out.push(page.iter().map(|r| r.id().to_owned()).collect());
    }
    out
}

async fn index_contract<S: JobStore>(store: S) {
    // Two jobs share a creation time: the id breaks the tie.
    let records = [
        record("a1", "acme", 10),
        record("a2", "acme", 20),
        record("a3", "acme", 20),
        record("a4", "acme", 30),
        record("b1", "beta", 15),
    ];
    let commits: Vec<Commit<'_>> = records
        .iter()
        .map(|r| Commit {
            record: r,
            expected: 0,
            deadline: None,
            ttl: None,
        })
        .collect();
    store.commit(&commits).await.unwrap();
    // A second commit of a job does not index it twice.
    let mut again = records[0].clone();
    again.attempts = 1;
    store
        .commit(&[Commit {
            record: &again,
            expected: 1,
            deadline: None,
            ttl: None,
        }])
        .await
        .unwrap();
    assert_eq!(
        pages(&store, "acme", 2).await,
        [vec!["a4", "a3"], vec!["a2", "a1"]],
        "newest first, pages do not overlap"
    );
    assert_eq!(pages(&store, "beta", 10).await, [vec!["b1"]]);
    assert!(pages(&store, "nobody", 10).await.is_empty());
    let first = store.tenant_jobs("acme", None, 10).await.unwrap();
    assert_eq!(first.last().unwrap().attempts, 1, "the records are current");

    // A finished job that expires leaves the listing.
    let mut done = records[3].clone();
    done.state = JobState::Succeeded;
    store
        .commit(&[Commit {
            record: &done,
            expected: 1,
            deadline: None,
            ttl: Some(Duration::from_millis(1)),
        }])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        pages(&store, "acme", 10).await,
        [vec!["a3", "a2", "a1"]],
        "expired records are left out"
    );
}

#[tokio::test]
async fn the_memory_store_lists_a_tenants_jobs_newest_first() {
    index_contract(MemoryJobStore::new()).await;
}

#[tokio::test]
#[ignore = "needs a real Redis (REDIS_URL): run by .ci/run"]
async fn the_redis_store_lists_a_tenants_jobs_newest_first() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("cap:test:views:{}:", cap_runtime::id::new_trace_id());
    let store = RedisJobStore::connect(&url, prefix).await.unwrap();
    index_contract(store).await;
}

const POLICY: &str = r#"
version: 1
rules:
  - id: needs-a-human
    match: { topics: ["job.approve"] }
    decision: require_approval
    reason: needs sign-off
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_are_announced_per_tenant_and_decisions_kept() {
    let bus = MemoryBus::new();
    let kernel = Kernel::new(Policy::from_text(POLICY, "policy.yaml").unwrap());
    let store = MemoryJobStore::new();
    let packets = Packets::new(bus.clone(), PacketConfig::new("scheduler-1"));
    let options = SchedulerOptions {
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let scheduler = Scheduler::new(packets, Arc::new(kernel), store.clone(), options);
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    let mut events = bus.subscribe(&events_subject("acme corp")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let client = Packets::new(bus.clone(), PacketConfig::new("client-1"));
    let request = v1::JobRequest {
        job_id: "held-1".into(),
        topic: "job.approve".into(),
        tenant_id: "acme corp".into(),
        ..Default::default()
    };
    client
        .publish(cap_proto::subject::SUBMIT, client.envelope("t1", request))
        .await
        .unwrap();
    let mut states = Vec::new();
    while states.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .unwrap();
        let ev: JobStateEvent = serde_json::from_slice(msg.payload()).unwrap();
        assert_eq!(
            (ev.job_id.as_str(), ev.tenant.as_str()),
            ("held-1", "acme corp")
        );
        assert_eq!(ev.topic, "job.approve");
        states.push(ev.state);
    }
    assert_eq!(states, ["PENDING", "SCHEDULED"]);
    assert_eq!(events_subject("acme corp"), "cap.sched.events.acme_corp");
    // The record says why it waits and what the kernel decided.
    let mut held = None;
    for _ in 0..100 {
        held = store
            .load(&["held-1".into()])
            .await
            .unwrap()
            .pop()
            .flatten();
        if held
            .as_ref()
            .is_some_and(|s| !s.record.decisions.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = held.unwrap().record;
    assert_eq!(held.tenant(), "acme corp");
    assert_eq!(held.decisions.len(), 1);
    assert_eq!(held.decisions[0].action, "REQUIRE_APPROVAL");
    assert_eq!(held.decisions[0].rule_id, "needs-a-human");
    assert_eq!(held.decisions[0].reason, "needs sign-off");
    let listed = store.tenant_jobs("acme corp", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    stop.cancel();
}
