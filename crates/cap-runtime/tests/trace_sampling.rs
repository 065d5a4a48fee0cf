//! Head sampling across hops: a job whose trace is not sampled gets no span in any hop
//! and every packet about it says so (`traceparent` flags `00`); a sampled one is linked
//! at every hop and flagged `01`. One test: the hook and the ratio are process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::Message;
use cap_runtime::SubmitOptions;
use cap_runtime::testing::TestBed;
use cap_runtime::trace_context::{self, TraceContext, TraceHook};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Spans made the root of a trace, and spans linked to a remote parent.
static ROOTS: AtomicUsize = AtomicUsize::new(0);
static LINKED: AtomicUsize = AtomicUsize::new(0);

/// Counts what the libraries ask a tracing system to record.
struct Counting;

impl TraceHook for Counting {
    fn link(&self, _span: &tracing::Span, _trace_id: [u8; 16], parent: Option<&TraceContext>) {
        match parent {
            Some(_) => LINKED.fetch_add(1, Ordering::SeqCst),
            None => ROOTS.fetch_add(1, Ordering::SeqCst),
        };
    }
    fn context(&self, _span: &tracing::Span) -> Option<TraceContext> {
        None
    }
}

async fn echo(_ctx: cap_runtime::Context, n: u64) -> Result<u64, cap_runtime::JobError> {
    Ok(n)
}

async fn next_message(sub: &mut cap_bus::MemorySubscription) -> Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
}

fn flags(m: &Message) -> (bool, [u8; 16]) {
    let c = TraceContext::from_headers(m.headers()).expect("a valid traceparent");
    (c.sampled, c.trace_id)
}

#[tokio::test]
async fn an_unsampled_job_makes_no_span_and_its_packets_say_so() {
    assert!(trace_context::install_hook(Box::new(Counting)));
    let bed = TestBed::new();
    let mut requests = common::sub(&bed.bus, "job.trace").await;
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;
    let worker = bed
        .worker()
        .handler("job.trace", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();

    // One job at `ratio`: the flags and trace ids of its request and of its result.
    let mut run = async |ratio: f64, input: u64| {
        trace_context::set_sample_ratio(ratio);
        let mut job = client
            .submit_with("job.trace", &input, SubmitOptions::default().direct())
            .await
            .unwrap();
        job.result().await.unwrap();
        let request = flags(&next_message(&mut requests).await);
        (request, flags(&next_message(&mut results).await))
    };

    // No trace sampled: no span anywhere, and the decision travels with the job.
    let ((sampled, trace), result) = run(0.0, 1).await;
    assert!(!sampled, "the request says: not sampled");
    assert_eq!(result, (false, trace), "the worker keeps the decision");
    assert_eq!(ROOTS.load(Ordering::SeqCst), 0, "no root span");
    assert_eq!(LINKED.load(Ordering::SeqCst), 0, "no hop span");

    // Every trace sampled: the submit is a root, the worker's and the client's hops
    // are linked to what they received.
    let ((sampled, trace), result) = run(1.0, 2).await;
    assert!(sampled);
    assert_eq!(result, (true, trace));
    assert_eq!(ROOTS.load(Ordering::SeqCst), 1, "the submit");
    assert!(
        LINKED.load(Ordering::SeqCst) >= 2,
        "the worker's handle and the client's result: {}",
        LINKED.load(Ordering::SeqCst)
    );
    cap_runtime::testing::stop(worker).await;
}
