//! The job store and the blob store on a real Redis Cluster (3 primaries, 3 replicas,
//! started on loopback by the test): compare-and-set, deadlines, idempotency keys and
//! workflow links across every bucket, and both stores keep working after a primary is
//! killed and its replica takes over.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_blob::{BlobStore, RedisBlobStore, RedisConfig};
use cap_proto::{JobState, v1};
use cap_scheduler::core::JobRecord;
use cap_scheduler::shell::{BUCKETS, Commit, Committed};
use cap_scheduler::{JobStore, RedisJobStore};
use cap_testkit::RedisCluster;
use std::time::Duration;

fn record(id: &str) -> JobRecord {
    JobRecord::new(
        v1::JobRequest {
            job_id: id.into(),
            topic: "job.c".into(),
            ..Default::default()
        },
        "t".into(),
        "c".into(),
        1,
    )
}

async fn commit(store: &RedisJobStore, r: &JobRecord, expected: u64, at: Option<u64>) -> Committed {
    store
        .commit(&[Commit {
            record: r,
            expected,
            deadline: at,
            ttl: r.state.is_terminal().then_some(Duration::from_secs(60)),
        }])
        .await
        .unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and redis-cli (a Redis Cluster is started): run by .ci/run"]
async fn the_job_and_blob_stores_run_on_a_redis_cluster_and_survive_a_failover() {
    let mut cluster = RedisCluster::start(3, 1);
    let store = RedisJobStore::connect(&cluster.urls(), "cap:sched:")
        .await
        .unwrap();
    let blobs = RedisBlobStore::connect(RedisConfig::new(cluster.urls()))
        .await
        .unwrap();

    // Enough jobs to land in every bucket, hence on every primary.
    let ids: Vec<String> = (0..(BUCKETS * 4)).map(|i| format!("job-{i}")).collect();
    let records: Vec<JobRecord> = ids.iter().map(|id| record(id)).collect();
    let commits: Vec<Commit<'_>> = records
        .iter()
        .map(|r| Commit {
            record: r,
            expected: 0,
            deadline: Some(10),
            ttl: None,
        })
        .collect();
    let out = store.commit(&commits).await.unwrap();
    assert!(out.iter().all(|c| *c == Committed::Yes(1)), "{out:?}");
    // A second create of the same job conflicts: two instances cannot both create it.
    assert_eq!(
        commit(&store, &records[0], 0, None).await,
        Committed::Conflict
    );
    let loaded = store.load(&ids).await.unwrap();
    assert!(
        loaded
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.version == 1))
    );

    // Deadlines in every bucket are claimed, once.
    let due = store.claim_due(100, 10_000, 10_000).await.unwrap();
    assert_eq!(due.len(), ids.len());
    assert!(
        store
            .claim_due(100, 10_000, 10_000)
            .await
            .unwrap()
            .is_empty()
    );
    store.rearm(&ids[0], 1, Some(50)).await.unwrap();
    assert_eq!(
        store.claim_due(100, 20_000, 10).await.unwrap(),
        [ids[0].clone()]
    );

    // Idempotency keys and workflow links.
    assert_eq!(
        store
            .claim_key("k", "job-1", Duration::from_secs(60))
            .await
            .unwrap(),
        "job-1"
    );
    assert_eq!(
        store
            .claim_key("k", "job-2", Duration::from_secs(60))
            .await
            .unwrap(),
        "job-1"
    );
    store
        .link_child("job-1", "job-2", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .link_child("job-1", "job-3", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.children("job-1").await.unwrap(), ["job-2", "job-3"]);

    // Blobs too.
    blobs
        .put_context("job-1", bytes::Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();

    // Kill a primary (once its replica has every write): the replica takes over, and
    // both stores keep working.
    cluster.wait_in_sync(Duration::from_secs(20));
    let victim = cluster.primaries()[0];
    cluster.node(victim).kill();
    cluster.wait_ok(Duration::from_secs(30));
    // The client learns the new topology; a command sent during the switch may fail
    // without an answer (`Unknown`: it may have been applied), and is settled by
    // reading the record, as the scheduler's engine does.
    let mut settled = vec![false; records.len()];
    for _ in 0..50 {
        let batch: Vec<Commit<'_>> = records
            .iter()
            .zip(&settled)
            .filter(|(_, s)| !**s)
            .map(|(r, _)| Commit {
                record: r,
                expected: 1,
                deadline: None,
                ttl: None,
            })
            .collect();
        let ids: Vec<String> = batch.iter().map(|c| c.record.id().to_owned()).collect();
        let out = store.commit(&batch).await.unwrap();
        drop(batch);
        for (id, c) in ids.iter().zip(out) {
            let i = records.iter().position(|r| r.id() == id).unwrap();
            match c {
                Committed::Yes(v) => {
                    assert_eq!(v, 2);
                    settled[i] = true;
                }
                Committed::Unknown | Committed::Conflict => {
                    if let Ok(got) = store.load(std::slice::from_ref(id)).await
                        && got[0].as_ref().is_some_and(|s| s.version == 2)
                    {
                        settled[i] = true;
                    }
                }
            }
        }
        if settled.iter().all(|s| *s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        settled.iter().all(|s| *s),
        "the job store did not recover from the failover"
    );
    // Every record took exactly one write (version 2): none lost, none applied twice.
    for s in store.load(&ids).await.unwrap() {
        assert_eq!(s.unwrap().version, 2);
    }
    let mut done = records[0].clone();
    done.state = JobState::Succeeded;
    assert_eq!(commit(&store, &done, 2, None).await, Committed::Yes(3));
    let got = blobs.get("ctx:job-1").await.unwrap();
    assert_eq!(&got[..], b"{\"a\":1}");
    // The killed node comes back as a replica; the cluster stays ok.
    cluster.node(victim).restart();
    cluster.wait_ok(Duration::from_secs(30));
}
