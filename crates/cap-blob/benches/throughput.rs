//! Throughput of the blob stores, side by side with `redis-benchmark` on the same server in
//! the same run.
//!
//! ```text
//! cargo bench -p cap-blob --bench throughput
//! ```
//! - Redis: put+get round trips through `RedisBlobStore` (one `SET`, then one `GET` of
//!   the same key, each awaited before the next) from 64 concurrent tasks, against
//!   `redis-benchmark -t set,get -c 64` with the same value size. Target: the store's ops/s
//!   at least 70% of redis-benchmark's.
//! - Memory: put+get round trips through `MemoryBlobStore`, 64 concurrent tasks. Target:
//!   at least 2 M ops/s.
//!
//! Starts its own `redis-server` on a free loopback port (killed at the end), unless
//! `CAP_BLOB_BENCH_REDIS_URL=redis://host:port/db` names one. Knobs: `CAP_BLOB_BENCH_N`
//! (round trips per measurement, default 200000), `CAP_BLOB_BENCH_ROUNDS` (default 3; the
//! median is reported), `CAP_BLOB_BENCH_VALUE` (value bytes, default 256),
//! `CAP_BLOB_BENCH_THREADS` (tokio worker threads for the store; 0 = current-thread
//! runtime, the default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use cap_blob::{BlobStore, Limits, MemoryBlobStore, RedisBlobStore, RedisConfig};

const CONCURRENCY: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `redis-benchmark -t set,get` requests/s: (SET, GET). `pipeline` > 1 adds `-P`.
fn redis_benchmark(host: &str, port: u16, n: usize, value: usize, pipeline: usize) -> (f64, f64) {
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string(), "-t", "set,get", "-c"])
        .arg(CONCURRENCY.to_string())
        .args(["-n", &n.to_string(), "-d", &value.to_string(), "--csv"])
        .args(["-P", &pipeline.to_string()])
        .output()
        .expect("needs redis-benchmark on PATH");
    assert!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = |test: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .and_then(|l| l.split(',').nth(1))
            .map(|v| v.trim_matches('"').parse().unwrap())
            .unwrap_or_else(|| panic!("no {test} line in redis-benchmark output:\n{text}"))
    };
    (rps("SET"), rps("GET"))
}

/// Round trips/s of put+get through `store` from `CONCURRENCY` tasks, `n` in total.
async fn round_trips<S: BlobStore + Clone + 'static>(store: S, n: usize, value: Bytes) -> f64 {
    let left = Arc::new(AtomicUsize::new(n));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let (store, left, value) = (store.clone(), left.clone(), value.clone());
            tokio::spawn(async move {
                let key = format!("cap-blob-bench:{t}");
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    store.put(&key, value.clone(), None).await.unwrap();
                    let got = store.get(&key).await.unwrap();
                    assert_eq!(got.len(), value.len());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick {
        2_000
    } else {
        env_usize("CAP_BLOB_BENCH_N", 200_000)
    };
    let rounds = if quick {
        1
    } else {
        env_usize("CAP_BLOB_BENCH_ROUNDS", 3).max(1)
    };
    let value_len = env_usize("CAP_BLOB_BENCH_VALUE", 256);
    let threads = env_usize("CAP_BLOB_BENCH_THREADS", 0);
    let value = Bytes::from(vec![b'x'; value_len]);
    let verdict = |ok: bool| match (quick, ok) {
        (true, _) => "smoke run (cargo test): figures not meaningful",
        (false, true) => "OK",
        (false, false) => "BELOW TARGET",
    };

    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };

    let (_server, url, host, port) = match std::env::var("CAP_BLOB_BENCH_REDIS_URL") {
        Ok(url) => {
            let u = url::Url::parse(&url).expect("CAP_BLOB_BENCH_REDIS_URL");
            let host = u.host_str().unwrap().to_owned();
            let port = u.port().unwrap_or(6379);
            (None, url, host, port)
        }
        Err(_) => {
            let server = redis_server::RedisServer::start();
            let (url, port) = (server.url(), server.port());
            (Some(server), url, "127.0.0.1".to_owned(), port)
        }
    };

    println!(
        "cap-blob throughput: concurrency {CONCURRENCY}, value {value_len} B, {n} round trips x {rounds} rounds, \
         store runtime {}",
        if threads == 0 {
            "current-thread".to_owned()
        } else {
            format!("{threads} worker threads")
        }
    );
    println!("redis server: {url}");

    let store = runtime
        .block_on(RedisBlobStore::connect(RedisConfig::new(url.clone())))
        .unwrap();
    let (mut set, mut get, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (s, g) = redis_benchmark(&host, port, n, value_len, 1);
        let rt = runtime.block_on(round_trips(store.clone(), n, value.clone()));
        println!(
            "  round {round}: redis-benchmark SET {s:>10.0} req/s  GET {g:>10.0} req/s | \
             RedisBlobStore {rt:>9.0} put+get/s = {:>10.0} ops/s",
            rt * 2.0
        );
        set.push(s);
        get.push(g);
        ours.push(rt);
    }
    let (set, get, rt) = (median(set), median(get), median(ours));
    // The ceiling for a SET+GET mix: the harmonic mean of the two rates (time per pair).
    let ceiling = 2.0 / (1.0 / set + 1.0 / get);
    let ratio = rt * 2.0 / ceiling;
    println!(
        "redis-benchmark (median): SET {set:.0} req/s, GET {get:.0} req/s, SET+GET ceiling {ceiling:.0} ops/s"
    );
    println!(
        "RedisBlobStore  (median): {rt:.0} put+get round trips/s = {:.0} ops/s = {:.0}% of redis-benchmark (target >= 70%): {}",
        rt * 2.0,
        ratio * 100.0,
        verdict(ratio >= 0.70)
    );

    // For reference only (not the target): the server's ceiling when the client
    // pipelines 16 commands per connection.
    let (ps, pg) = redis_benchmark(&host, port, n * 5, value_len, 16);
    println!("reference: redis-benchmark -P 16 (pipelined): SET {ps:.0} req/s, GET {pg:.0} req/s");

    let memory = MemoryBlobStore::with_limits(Limits::default());
    let mem_n = n * 10;
    let mem: Vec<f64> = (0..rounds)
        .map(|_| runtime.block_on(round_trips(memory.clone(), mem_n, value.clone())))
        .collect();
    let mem = median(mem);
    println!(
        "MemoryBlobStore (median): {mem:.0} put+get round trips/s = {:.0} ops/s (target >= 2000000): {}",
        mem * 2.0,
        verdict(mem * 2.0 >= 2_000_000.0)
    );
}
