//! The sans-IO core: (state, event, now) → new state + actions. See [`SchedulerCore`].

mod admission;
mod config;
mod event;
mod job;
mod pools;
mod registry;
mod scheduler;

pub use admission::{Admission, DEFAULT_POINTER_SCHEMES, Refusal, Rule};
pub use config::{Config, backoff};
pub use event::{Action, Event};
pub use job::{Hold, JobRecord, Millis};
pub use pools::{Pools, PoolsError, Route};
pub use registry::{Registry, WorkerInfo};
pub use scheduler::{SchedulerCore, alert, policy_request};
