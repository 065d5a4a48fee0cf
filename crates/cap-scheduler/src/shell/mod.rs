//! The async shell: the [`Scheduler`] service, the [`Engine`] that applies events
//! against the shared [`JobStore`], and the stores (memory and Redis).

mod engine;
mod feed;
mod metrics;
#[cfg(feature = "redis")]
mod redis_store;
mod scheduler;
mod send;
mod stats;
mod store;
mod traces;

pub use engine::{Engine, EngineStats, Outcome};
pub use metrics::SchedulerMetrics;
#[cfg(feature = "redis")]
pub use redis_store::{BUCKETS, REDIS_CONNECT_TIMEOUT, RedisJobStore};
pub use scheduler::{
    APPROVAL_SUBJECT, EVENTS_PREFIX, Error, JobStateEvent, Observed, QUEUE_GROUP, Scheduler,
    SchedulerOptions, events_subject, in_state, now_ms,
};
pub use stats::SchedulerStats;
pub use store::{Commit, Committed, JobStore, MemoryJobStore, StoreError, Stored, WorkerEntry};
