//! Pointer scoping on a real Redis: a job reads its own context; the scheduler's keys,
//! another job's result and keys outside the configured prefixes are refused before
//! Redis is asked, with fixed messages; a key of another type reads as "no blob" (no
//! `WRONGTYPE` text, no server address).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use bytes::Bytes;
use cap_blob::{BlobStore, ErrorKind, Pointer, PointerScope, Router};

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn a_jobs_pointer_reads_its_own_keys_and_nothing_of_ours() {
    let store = common::shared_redis().await;
    let p = common::unique_prefix("scope");
    let (me, other) = (format!("{p}-me"), format!("{p}-other"));
    store
        .put_context(&me, Bytes::from_static(b"mine"))
        .await
        .unwrap();
    store
        .put_result(&other, Bytes::from_static(b"theirs"))
        .await
        .unwrap();
    // Keys shaped like the scheduler's: a string record and a set.
    let sched_job = format!("cap:sched:job:{p}");
    let sched_set = format!("cap:sched:{p}:jobs");
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&sched_job)
        .arg("{\"state\":\"RUNNING\"}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg(&sched_set)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let shared_set = format!("shared-{p}:set");
    let _: () = redis::cmd("SADD")
        .arg(&shared_set)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();

    let scope = PointerScope::new()
        .allow_prefix(format!("shared-{p}:"))
        .unwrap();
    let job = scope.for_job(&me);
    let router = Router::new().with(store.clone());
    let ptr = |s: String| Pointer::parse(&s).unwrap();

    let outcome = async {
        assert_eq!(
            store
                .get_scoped(&Pointer::context(&me), &job)
                .await
                .unwrap(),
            "mine"
        );
        assert_eq!(
            router
                .get_scoped(&Pointer::context(&me), &job)
                .await
                .unwrap(),
            "mine"
        );
        for (pointer, message) in [
            (
                format!("redis://{sched_job}"),
                "pointer refused: keys under `cap:` are reserved to CAP services",
            ),
            (
                format!("redis://{sched_set}"),
                "pointer refused: keys under `cap:` are reserved to CAP services",
            ),
            (
                format!("redis://res:{other}"),
                "pointer refused: a job reads only its own keys (ctx:, res:, art: + its job id) and the configured prefixes",
            ),
        ] {
            for err in [
                store
                    .get_scoped(&ptr(pointer.clone()), &job)
                    .await
                    .unwrap_err(),
                router
                    .get_scoped(&ptr(pointer.clone()), &job)
                    .await
                    .unwrap_err(),
            ] {
                assert_eq!(err.kind(), ErrorKind::OutOfScope, "{pointer}: {err}");
                assert_eq!(err.to_string(), message);
            }
        }
        // Allowed by a prefix but not a blob: "not found", nothing of Redis's answer.
        let err = store
            .get_scoped(&ptr(format!("redis://{shared_set}")), &job)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let text = err.to_string();
        assert!(
            !text.contains("WRONGTYPE") && !text.contains("6379"),
            "{text}"
        );
        // Unscoped reads of such a key say the same.
        let err = store.get(&shared_set).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    };
    let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    let _: () = redis::cmd("DEL")
        .arg(&sched_job)
        .arg(&sched_set)
        .arg(&shared_set)
        .arg(format!("ctx:{me}"))
        .arg(format!("res:{other}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
