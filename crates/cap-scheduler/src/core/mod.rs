//! The sans-IO core: the per-job state machine ([`step`]: (record, event, env) → new
//! record + actions + follow-ups) and [`SchedulerCore`], its in-memory driver.
//!
//! One file per concern: `submit.rs` (idempotency, admission), `safety.rs` (decisions,
//! re-checks), `dispatch.rs` (routing, fenced attempts), [`fence`] (is a report for the
//! attempt in flight?), `outcome.rs` (results, progress, retries, dead letters),
//! `cancel.rs` (cancels, timeouts), `workflow.rs` (compensations), [`timers`] (deadlines),
//! [`workers`] (handshakes, lost workers), [`Refused`] (workers with no common version).

mod admission;
mod cancel;
mod config;
mod dispatch;
mod env;
mod event;
pub mod fence;
mod job;
mod machine;
mod messages;
mod outcome;
mod pools;
mod refused;
mod registry;
mod safety;
mod scheduler;
mod submit;
pub mod timers;
pub mod workers;
mod workflow;

pub use admission::{Admission, DEFAULT_POINTER_SCHEMES, Refusal, Rule};
pub use config::{Config, backoff};
pub use env::{CHILDREN, Env, JobView, Lookup, MapView};
pub use event::{Action, Claim, Event, Fence, FollowUp, JobEvent};
pub use job::{Attempt, Decision, Hold, JobRecord, Millis, TraceParent};
pub use machine::{Step, step};
pub use messages::{alert, policy_request};
pub use pools::{Pools, PoolsError, Route};
pub use refused::{MAX_REFUSED, Refused, RefusedWorker};
pub use registry::{Registry, WorkerInfo};
pub use scheduler::SchedulerCore;
