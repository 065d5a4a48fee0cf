//! The job state machine: states, terminality and the legal moves between them.
//!
//! ```text
//! PENDING → SCHEDULED → DISPATCHED → RUNNING → SUCCEEDED | FAILED | FAILED_FATAL | TIMEOUT
//!                 ↘ DENIED      ↘ TIMEOUT   ↘ FAILED_RETRYABLE → SCHEDULED | DISPATCHED (retry)
//! any non-terminal state → CANCELLED
//! ```
//!
//! ```
//! use cap_proto::state::{JobState, Transition, TransitionError, transition};
//! assert_eq!(transition(JobState::Pending, JobState::Scheduled), Ok(Transition::Moved));
//! assert_eq!(transition(JobState::Running, JobState::Running), Ok(Transition::Unchanged));
//! assert!(matches!(
//!     transition(JobState::Succeeded, JobState::Cancelled),
//!     Err(TransitionError::CancelAfterTerminal { .. })
//! ));
//! ```

use crate::v1::JobStatus;
use std::fmt;

/// A job's lifecycle state (`JobStatus` without `UNSPECIFIED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Submitted, not yet examined.
    Pending,
    /// Accepted by the scheduler, awaiting the safety decision.
    Scheduled,
    /// Sent to a pool or a worker.
    Dispatched,
    /// A worker is executing it.
    Running,
    /// Finished successfully (terminal).
    Succeeded,
    /// Failed (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
    /// Denied by the safety kernel (terminal).
    Denied,
    /// Ran out of time (terminal).
    Timeout,
    /// Failed in a way a retry may fix (not terminal).
    FailedRetryable,
    /// Failed in a way no retry fixes (terminal).
    FailedFatal,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 11] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Dispatched,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Denied,
        JobState::Timeout,
        JobState::FailedRetryable,
        JobState::FailedFatal,
    ];

    /// Whether no further move is possible.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::FailedFatal
                | JobState::Cancelled
                | JobState::Denied
                | JobState::Timeout
        )
    }

    /// The wire status.
    pub const fn status(self) -> JobStatus {
        match self {
            JobState::Pending => JobStatus::Pending,
            JobState::Scheduled => JobStatus::Scheduled,
            JobState::Dispatched => JobStatus::Dispatched,
            JobState::Running => JobStatus::Running,
            JobState::Succeeded => JobStatus::Succeeded,
            JobState::Failed => JobStatus::Failed,
            JobState::Cancelled => JobStatus::Cancelled,
            JobState::Denied => JobStatus::Denied,
            JobState::Timeout => JobStatus::Timeout,
            JobState::FailedRetryable => JobStatus::FailedRetryable,
            JobState::FailedFatal => JobStatus::FailedFatal,
        }
    }

    /// The state of a wire status value; `None` for `UNSPECIFIED` and unknown numbers.
    pub fn from_i32(status: i32) -> Option<Self> {
        JobState::ALL
            .iter()
            .copied()
            .find(|s| s.status() as i32 == status)
    }

    /// The state's name: its `JobStatus` name without the `JOB_STATUS_` prefix
    /// (`"SUCCEEDED"`), as [`Display`](fmt::Display) writes it, without allocating.
    ///
    /// ```
    /// assert_eq!(cap_proto::JobState::FailedRetryable.name(), "FAILED_RETRYABLE");
    /// ```
    pub fn name(self) -> &'static str {
        let name = self.status().as_str_name();
        name.strip_prefix("JOB_STATUS_").unwrap_or(name)
    }

    /// Position along the forward path, for telling backwards moves apart.
    const fn rank(self) -> u8 {
        match self {
            JobState::Pending => 0,
            JobState::Scheduled => 1,
            JobState::Dispatched => 2,
            JobState::Running => 3,
            JobState::FailedRetryable => 4,
            _ => 5,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<JobState> for JobStatus {
    fn from(s: JobState) -> Self {
        s.status()
    }
}

impl TryFrom<JobStatus> for JobState {
    type Error = TransitionError;
    fn try_from(s: JobStatus) -> Result<Self, TransitionError> {
        JobState::from_i32(s as i32).ok_or(TransitionError::Unspecified)
    }
}

/// What a legal transition did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The state changed.
    Moved,
    /// The same state again: an idempotent repeat (at-least-once delivery).
    Unchanged,
}

/// Why a transition is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// A move back along the lifecycle (e.g. RUNNING → DISPATCHED).
    #[error("backwards move {from} → {to}")]
    Backwards {
        /// Current state.
        from: JobState,
        /// Requested state.
        to: JobState,
    },
    /// A different terminal state after a terminal one.
    #[error("second terminal state {to} after {from}")]
    SecondTerminal {
        /// Current (terminal) state.
        from: JobState,
        /// Requested terminal state.
        to: JobState,
    },
    /// A cancel after the job already ended.
    #[error("cancel after terminal state {from}")]
    CancelAfterTerminal {
        /// Current (terminal) state.
        from: JobState,
    },
    /// A forward move the lifecycle does not have (e.g. PENDING → RUNNING).
    #[error("illegal move {from} → {to}")]
    Illegal {
        /// Current state.
        from: JobState,
        /// Requested state.
        to: JobState,
    },
    /// `JOB_STATUS_UNSPECIFIED` or an unknown status number.
    #[error("unspecified or unknown job status")]
    Unspecified,
}

/// Checks the move `from → to`.
pub fn transition(from: JobState, to: JobState) -> Result<Transition, TransitionError> {
    use JobState::*;
    if from == to {
        return Ok(Transition::Unchanged);
    }
    if from.is_terminal() {
        return Err(match to {
            Cancelled => TransitionError::CancelAfterTerminal { from },
            t if t.is_terminal() => TransitionError::SecondTerminal { from, to },
            _ => TransitionError::Backwards { from, to },
        });
    }
    let legal = matches!(
        (from, to),
        (_, Cancelled)
            | (Pending, Scheduled)
            | (Scheduled, Dispatched | Denied)
            | (Dispatched, Running | Timeout)
            | (
                Running,
                Succeeded | Failed | FailedRetryable | FailedFatal | Timeout
            )
            | (FailedRetryable, Scheduled | Dispatched)
    );
    if legal {
        Ok(Transition::Moved)
    } else if to.rank() < from.rank() {
        Err(TransitionError::Backwards { from, to })
    } else {
        Err(TransitionError::Illegal { from, to })
    }
}

/// Checks a move given as wire status numbers.
pub fn transition_status(from: i32, to: i32) -> Result<Transition, TransitionError> {
    let from = JobState::from_i32(from).ok_or(TransitionError::Unspecified)?;
    let to = JobState::from_i32(to).ok_or(TransitionError::Unspecified)?;
    transition(from, to)
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [Succeeded, Failed, Cancelled, Denied, Timeout, FailedFatal]
        );
    }

    #[test]
    fn the_whole_transition_table() {
        let legal = [
            (Pending, Scheduled),
            (Scheduled, Dispatched),
            (Scheduled, Denied),
            (Dispatched, Running),
            (Dispatched, Timeout),
            (Running, Succeeded),
            (Running, Failed),
            (Running, FailedRetryable),
            (Running, FailedFatal),
            (Running, Timeout),
            (FailedRetryable, Scheduled),
            (FailedRetryable, Dispatched),
            (Pending, Cancelled),
            (Scheduled, Cancelled),
            (Dispatched, Cancelled),
            (Running, Cancelled),
            (FailedRetryable, Cancelled),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let got = transition(from, to);
                if from == to {
                    assert_eq!(got, Ok(Transition::Unchanged), "{from}->{to}");
                } else if legal.contains(&(from, to)) {
                    assert_eq!(got, Ok(Transition::Moved), "{from}->{to}");
                } else {
                    assert!(got.is_err(), "{from}->{to} should be rejected");
                }
            }
        }
    }

    #[test]
    fn rejection_reasons() {
        assert_eq!(
            transition(Running, Dispatched),
            Err(TransitionError::Backwards {
                from: Running,
                to: Dispatched
            })
        );
        assert_eq!(
            transition(Succeeded, Failed),
            Err(TransitionError::SecondTerminal {
                from: Succeeded,
                to: Failed
            })
        );
        assert_eq!(
            transition(Denied, Cancelled),
            Err(TransitionError::CancelAfterTerminal { from: Denied })
        );
        assert_eq!(
            transition(Succeeded, Running),
            Err(TransitionError::Backwards {
                from: Succeeded,
                to: Running
            })
        );
        assert_eq!(
            transition(Pending, Running),
            Err(TransitionError::Illegal {
                from: Pending,
                to: Running
            })
        );
        assert_eq!(transition_status(0, 1), Err(TransitionError::Unspecified));
        assert_eq!(transition_status(1, 99), Err(TransitionError::Unspecified));
        assert_eq!(transition_status(1, 2), Ok(Transition::Moved));
    }

    #[test]
    fn status_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_i32(s.status() as i32), Some(s));
        }
        assert_eq!(JobState::from_i32(0), None);
        assert_eq!(Running.to_string(), "RUNNING");
    }
}
