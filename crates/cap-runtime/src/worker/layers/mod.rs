//! The built-in middleware, as plain `tower` layers over [`Job`](crate::Job) services:
//! [`TraceLayer`] (a span per job), [`TimeoutLayer`] (the job's deadline, else a
//! default), [`RetryLayer`] (exponential backoff with jitter, per-handler override).
//! The concurrency limit is the worker's `max_parallel` (enforced where jobs are taken
//! from the bus); `tower::limit::ConcurrencyLimitLayer` adds a per-handler one.

mod retry;
mod timeout;
mod trace;

pub use retry::{RetryLayer, RetryPolicy, RetryService};
pub use timeout::{TimeoutLayer, TimeoutService};
pub use trace::{TraceLayer, TraceService};
