//! Side-by-side throughput and latency of small packets (128 bytes):
//! the in-memory bus, the NATS bus, and raw async-nats doing the same work.
//!
//! ```text
//! cargo bench -p cap-bus --bench bus
//! ```
//!
//! Throughput: one task publishes N messages to a subject, one subscription task
//! receives them; at most `WINDOW` messages are in flight (so no side drops anything);
//! messages/s = N / time until the last one arrived. Latency: one message at a time,
//! publish → received by the subscription, p50/p99 over `SAMPLES` messages.
//! NATS rows need a server at NATS_URL (default nats://127.0.0.1:4222); without one
//! they are reported as skipped. `CAP_BUS_BENCH_SCALE` (default 1.0) scales N.

#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::Bytes;
use cap_bus::{Bus, MemoryBus, NatsBus, NatsOptions};
use futures_util::StreamExt;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const PAYLOAD: usize = 128;
const WINDOW: u64 = 20_000;

struct Row {
    name: &'static str,
    msgs_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn scale() -> f64 {
    std::env::var("CAP_BUS_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The work, written once over a publish closure and a message stream.
async fn measure<P, Fut, S>(
    name: &'static str,
    n: u64,
    samples: usize,
    publish: P,
    mut sub: S,
) -> Row
where
    P: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = ()>,
    S: futures_core::Stream<Item = ()> + Unpin + Send + 'static,
{
    let payload = Bytes::from(vec![0xabu8; PAYLOAD]);
    // Latency first (one message in flight).
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        publish(payload.clone()).await;
        sub.next().await;
        lat.push(t.elapsed());
    }
    lat.sort();

    // Throughput.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let receiver = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < n {
            if sub.next().await.is_none() {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    for i in 0..n {
        while i.saturating_sub(received.load(Ordering::Relaxed)) >= WINDOW {
            tokio::task::yield_now().await;
        }
        publish(payload.clone()).await;
    }
    let _ = receiver.await;
    let elapsed = start.elapsed();
    let got = received.load(Ordering::Relaxed);
    assert_eq!(got, n, "{name}: received {got} of {n}");
    Row {
        name,
        msgs_per_sec: n as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    }
}

async fn memory_row(n: u64, samples: usize) -> Row {
    let bus = MemoryBus::new();
    let sub = bus.subscribe("bench.mem").await.unwrap().map(|_| ());
    let b = bus.clone();
    measure(
        "memory bus",
        n,
        samples,
        move |p| {
            let b = b.clone();
            async move { b.publish("bench.mem", p).await.unwrap() }
        },
        sub,
    )
    .await
}

async fn nats_bus_row(url: &str, n: u64, samples: usize) -> Option<Row> {
    let bus = NatsBus::connect(NatsOptions::new(url).without_jetstream())
        .await
        .ok()?;
    let subject = format!("bench.capbus.{}", std::process::id());
    let sub = bus.subscribe(&subject).await.unwrap().map(|_| ());
    bus.flush().await.unwrap();
    let b = bus.clone();
    let s = subject.clone();
    let row = measure(
        "NATS bus (cap-bus)",
        n,
        samples,
        move |p| {
            let b = b.clone();
            let s = s.clone();
            async move { b.publish(&s, p).await.unwrap() }
        },
        sub,
    )
    .await;
    bus.close().await.unwrap();
    Some(row)
}

async fn raw_nats_row(url: &str, n: u64, samples: usize) -> Option<Row> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(65536)
        .connect(url)
        .await
        .ok()?;
    let subject = format!("bench.raw.{}", std::process::id());
    let sub = client.subscribe(subject.clone()).await.unwrap().map(|_| ());
    client.flush().await.unwrap();
    let c = client.clone();
    let s = async_nats::Subject::from(subject);
    let row = measure(
        "raw async-nats",
        n,
        samples,
        move |p| {
            let c = c.clone();
            let s = s.clone();
            async move { c.publish(s, p).await.unwrap() }
        },
        sub,
    )
    .await;
    client.drain().await.ok();
    Some(row)
}

fn best(a: Option<Row>, b: Row) -> Row {
    match a {
        None => b,
        Some(a) => Row {
            name: b.name,
            msgs_per_sec: a.msgs_per_sec.max(b.msgs_per_sec),
            p50: a.p50.min(b.p50),
            p99: a.p99.min(b.p99),
        },
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = scale();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    rt.block_on(async {
        let mem = memory_row((2_000_000.0 * s) as u64, 100_000).await;
        let n_nats = (500_000.0 * s) as u64;
        // Alternate raw and bus over three rounds and keep each one's best figures, so a
        // noisy neighbour on the shared machine does not decide the comparison.
        let mut raw: Option<Row> = None;
        let mut bus: Option<Row> = None;
        for _ in 0..3 {
            if let Some(r) = raw_nats_row(&url, n_nats, 20_000).await {
                raw = Some(best(raw, r));
            }
            if let Some(r) = nats_bus_row(&url, n_nats, 20_000).await {
                bus = Some(best(bus, r));
            }
        }
        println!();
        println!("small packets ({PAYLOAD} B), 1 publisher -> 1 subscriber, 2 worker threads");
        println!(
            "{:<22} {:>14} {:>12} {:>12}",
            "transport", "messages/s", "p50 latency", "p99 latency"
        );
        let print = |r: &Row| {
            println!(
                "{:<22} {:>14.0} {:>10.1}µs {:>10.1}µs",
                r.name,
                r.msgs_per_sec,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6
            )
        };
        print(&mem);
        match (&bus, &raw) {
            (Some(b), Some(r)) => {
                print(b);
                print(r);
                println!(
                    "NATS bus / raw: throughput {:.1}%, p50 latency {:.1}%",
                    100.0 * b.msgs_per_sec / r.msgs_per_sec,
                    100.0 * b.p50.as_secs_f64() / r.p50.as_secs_f64()
                );
            }
            _ => println!("NATS rows skipped: no server at {url}"),
        }
        println!(
            "targets: memory >= 1000000 msg/s: {}",
            if mem.msgs_per_sec >= 1e6 {
                "met"
            } else {
                "NOT met"
            }
        );
    });
}
