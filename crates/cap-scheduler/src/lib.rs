//! # cap-scheduler
//!
//! The CAP control plane: consumes `sys.job.submit`, asks the safety kernel, dispatches
//! to pools or to chosen workers, follows results and progress, retries with back-off,
//! times out, dead-letters, cancels, and runs workflow compensations.
//!
//! The decisions live in [`core::SchedulerCore`], a pure state machine driven by events
//! and the time (the sans-IO style of quinn-proto), so every path is tested step by step
//! on a virtual clock:
//!
//! ```
//! use cap_scheduler::core::{Action, Config, Event, Pools, SchedulerCore};
//! use cap_proto::{JobState, v1};
//!
//! let mut core = SchedulerCore::new("scheduler-1", Config::default(), Pools::default());
//! let request = v1::JobRequest { job_id: "j1".into(), topic: "job.echo".into(), ..Default::default() };
//! let actions = core.handle(Event::Submitted { request, trace_id: "t".into(), sender: "c".into(), identity: None }, 0);
//! assert!(actions.iter().any(|a| matches!(a, Action::CheckSafety { .. })));
//!
//! let allow = v1::PolicyCheckResponse { decision: 1, ..Default::default() };
//! let actions = core.handle(Event::SafetyDecided { job_id: "j1".into(), response: allow }, 5);
//! assert!(actions.iter().any(|a| matches!(a, Action::Dispatch { subject, .. } if subject == "job.echo")));
//! assert_eq!(core.job("j1").unwrap().state, JobState::Dispatched);
//! ```

pub mod core;
pub mod shell;
pub mod trust;

#[cfg(feature = "redis")]
pub use shell::RedisJobStore;
pub use shell::{
    JobStore, MemoryJobStore, Observed, Scheduler, SchedulerMetrics, SchedulerOptions,
    SchedulerStats,
};
