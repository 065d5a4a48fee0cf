//! Safety decisions: allow (with constraints), redact, require a human, throttle, deny,
//! and failing closed when the kernel cannot be reached.

use super::config::backoff;
use super::event::Action;
use super::job::{Decision, Hold};
use super::machine::Work;
use super::timers::ms;
use cap_proto::{ErrorCode, JobState, v1};

const ALLOW: i32 = 1;
const REQUIRE_HUMAN: i32 = 3;
const THROTTLE: i32 = 4;
const ALLOW_WITH_CONSTRAINTS: i32 = 5;
const REDACT: i32 = 7;

/// The name of a kernel decision (`DecisionType` without its prefix).
fn decision_name(decision: i32) -> &'static str {
    match decision {
        ALLOW => "ALLOW",
        2 => "DENY",
        REQUIRE_HUMAN => "REQUIRE_APPROVAL",
        THROTTLE => "THROTTLE",
        ALLOW_WITH_CONSTRAINTS => "ALLOW_WITH_CONSTRAINTS",
        6 => "QUARANTINE",
        REDACT => "REDACT",
        _ => "UNSPECIFIED",
    }
}

impl Work<'_, '_> {
    fn waiting_for_safety(&self) -> bool {
        self.job.as_ref().is_some_and(|j| {
            j.state == JobState::Scheduled
                && matches!(j.hold, Some(Hold::Safety { .. } | Hold::Recheck { .. }))
        })
    }

    fn held_for_approval(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| matches!(j.hold, Some(Hold::Approval { .. })))
    }

    pub(crate) fn decided(&mut self, response: v1::PolicyCheckResponse) {
        if !self.waiting_for_safety() {
            return;
        }
        let id = self.id();
        let reason = if response.reason.is_empty() {
            "denied by policy".to_owned()
        } else {
            response.reason.clone()
        };
        let redacted = !response.redacted_context_ptr.is_empty();
        let at = self.env.now;
        if let Some(job) = self.job_mut() {
            job.decisions.push(Decision {
                at,
                action: decision_name(response.decision).to_owned(),
                reason: response.reason.clone(),
                rule_id: response.rule_id.clone(),
            });
        }
        match response.decision {
            ALLOW | ALLOW_WITH_CONSTRAINTS => {}
            REDACT if redacted => {}
            REQUIRE_HUMAN => {
                let approval_ref = if response.approval_ref.is_empty() {
                    id.clone()
                } else {
                    response.approval_ref.clone()
                };
                if let Some(job) = self.job_mut() {
                    job.hold = Some(Hold::Approval {
                        approval_ref: approval_ref.clone(),
                    });
                }
                self.alert(
                    v1::AlertSeverity::Info,
                    ErrorCode::UNSPECIFIED,
                    &format!("job {id} needs approval (ref {approval_ref})"),
                );
                return;
            }
            THROTTLE => {
                if let Some(job) = self.job_mut() {
                    job.safety_failures += 1;
                }
                self.recheck_later();
                return;
            }
            // DENY, QUARANTINE, REDACT without a redacted context, unknown or missing: deny.
            _ => {
                self.deny(&reason);
                return;
            }
        }
        let default_retries = self.env.config.max_retries;
        if let Some(job) = self.job_mut() {
            job.safety_failures = 0;
            job.max_retries = default_retries;
            if let Some(b) = response
                .constraints
                .as_ref()
                .and_then(|c| c.budgets.as_ref())
            {
                if b.max_retries > 0 {
                    job.max_retries = b.max_retries as u32;
                }
                if b.max_runtime_ms > 0 {
                    job.max_runtime_ms = b.max_runtime_ms as u64;
                }
            }
            if redacted {
                job.dispatch_context_ptr
                    .clone_from(&response.redacted_context_ptr);
            }
        }
        self.try_dispatch();
    }

    pub(crate) fn approved(&mut self) {
        if self.held_for_approval() {
            self.human_decision("APPROVED", "");
            self.try_dispatch();
        }
    }

    pub(crate) fn rejected(&mut self, reason: &str) {
        if self.held_for_approval() {
            self.human_decision("REJECTED", reason);
            self.deny(&format!("rejected by a human: {reason}"));
        }
    }

    fn human_decision(&mut self, action: &str, reason: &str) {
        let at = self.env.now;
        if let Some(job) = self.job_mut() {
            job.decisions.push(Decision {
                at,
                action: action.to_owned(),
                reason: reason.to_owned(),
                rule_id: String::new(),
            });
        }
    }

    pub(crate) fn deny(&mut self, reason: &str) {
        self.finish(JobState::Denied, ErrorCode::SAFETY_DENIED, reason);
    }

    pub(crate) fn kernel_down(&mut self, error: &str) {
        if !self.waiting_for_safety() {
            return;
        }
        let attempts = self.env.config.safety_attempts;
        let Some(job) = self.job_mut() else { return };
        job.safety_failures += 1;
        if job.safety_failures >= attempts {
            let msg = format!(
                "safety kernel unreachable after {attempts} attempts (fail closed): {error}"
            );
            self.deny(&msg);
            return;
        }
        self.recheck_later();
    }

    /// Asks the kernel again after a back-off that grows with the failures so far.
    pub(crate) fn recheck_later(&mut self) {
        let (base, max, now) = (
            self.env.config.recheck_base,
            self.env.config.retry_max,
            self.env.now,
        );
        let Some(job) = self.job_mut() else { return };
        let delay = backoff(base, max, job.safety_failures, &job.request.job_id);
        job.hold = Some(Hold::Recheck {
            at: now + ms(delay),
        });
    }

    /// A re-check came due: ask the kernel again.
    pub(crate) fn recheck_now(&mut self) {
        let Some(job) = self.job.as_deref() else {
            return;
        };
        let mut check = super::messages::policy_request(&job.request);
        if check.identity.is_none() {
            check.identity.clone_from(&job.identity);
        }
        let id = job.id().to_owned();
        let asked = self.env.now;
        if let Some(job) = self.job_mut() {
            job.hold = Some(Hold::Safety { asked });
        }
        self.actions.push(Action::CheckSafety {
            job_id: id,
            request: Box::new(check),
            parent: self.trace_parent(),
        });
    }
}
