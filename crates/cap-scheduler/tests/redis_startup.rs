//! The scheduler's job store fails fast at start-up: a closed port or a server that
//! never answers is an error within about 2 s, naming the URL without its password.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_scheduler::RedisJobStore;
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn closed_port() -> u16 {
    // Bound then dropped: nothing listens there.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect_error(url: &str) -> (String, Duration) {
    let started = Instant::now();
    let err = RedisJobStore::connect(url, "cap:sched:test:")
        .await
        .map(|_| ())
        .unwrap_err();
    (err.to_string(), started.elapsed())
}

#[tokio::test]
async fn a_closed_port_fails_fast_with_a_clear_message() {
    let port = closed_port();
    let (msg, took) = connect_error(&format!("redis://:hunter2@127.0.0.1:{port}/0")).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        msg.contains(&format!(
            "cannot reach Redis at redis://:***@127.0.0.1:{port}/0"
        )),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn a_silent_server_fails_within_the_connect_timeout() {
    // Accepts connections (the kernel's backlog) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (msg, took) = connect_error(&format!("redis://127.0.0.1:{port}/0")).await;
    drop(listener);
    assert!(took < Duration::from_secs(3), "took {took:?}: {msg}");
    assert!(msg.contains("cannot reach Redis"), "{msg}");
}
