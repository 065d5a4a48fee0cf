//! The async shell: the [`Scheduler`] service and its [`JobStore`]s.

mod scheduler;
mod send;
mod stats;
mod store;

pub use scheduler::{
    APPROVAL_SUBJECT, Error, Observed, QUEUE_GROUP, Scheduler, SchedulerOptions, in_state, now_ms,
};
pub use stats::SchedulerStats;
pub use store::{JobStore, MemoryJobStore, StoreError};
#[cfg(feature = "redis")]
pub use store::{REDIS_CONNECT_TIMEOUT, RedisJobStore};
