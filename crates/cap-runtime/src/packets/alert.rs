//! System alerts for rejected packets: severity per code, the alert message, and the
//! rate limiter that keeps a flood of bad packets from becoming a flood of alerts.

use super::inbound::Rejection;
use cap_proto::{ErrorCode, v1};
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

/// The severity CAP gives a protocol error: 100 and 101 ERROR, 102 WARNING, 103 and 104
/// CRITICAL (anything else ERROR).
pub fn severity(code: ErrorCode) -> v1::AlertSeverity {
    match code {
        ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD => v1::AlertSeverity::Warning,
        ErrorCode::PROTOCOL_SIGNATURE_INVALID | ErrorCode::PROTOCOL_SIGNATURE_MISSING => {
            v1::AlertSeverity::Critical
        }
        _ => v1::AlertSeverity::Error,
    }
}

fn level(s: v1::AlertSeverity) -> &'static str {
    match s {
        v1::AlertSeverity::Info => "INFO",
        v1::AlertSeverity::Warning => "WARNING",
        v1::AlertSeverity::Critical => "CRITICAL",
        _ => "ERROR",
    }
}

/// The alert reporting `rejection`, received on `subject`, from component `component`.
/// It names the code, the reason (our words and field paths), and the sanitised trace
/// and sender ids; never any payload text.
pub fn for_rejection(rejection: &Rejection, subject: &str, component: &str) -> v1::SystemAlert {
    let sev = severity(rejection.code);
    let mut details = std::collections::BTreeMap::new();
    details.insert("subject".to_owned(), super::inbound::sanitize(subject));
    if let Some(s) = &rejection.sender_id {
        details.insert("sender_id".to_owned(), s.clone());
    }
    if let Some(t) = &rejection.trace_id {
        details.insert("trace_id".to_owned(), t.clone());
    }
    if let Some(k) = rejection.kind {
        details.insert("payload".to_owned(), k.name().to_owned());
    }
    if let Some(a) = &rejection.answer {
        details.insert("job_id".to_owned(), super::inbound::sanitize(&a.job_id));
    }
    v1::SystemAlert {
        level: level(sev).to_owned(),
        message: format!(
            "{}: rejected {}",
            rejection.code,
            rejection.reason.describe()
        ),
        component: component.to_owned(),
        code: rejection.code.to_string(),
        severity: sev as i32,
        error_code_enum: rejection.code.as_i32(),
        source_component: component.to_owned(),
        details,
        trace_id: rejection.trace_id.clone().unwrap_or_default(),
    }
}

/// How many alerts a packet layer publishes: a token bucket of `burst` alerts refilled
/// at `per_second`. Alerts over the limit are not published but counted
/// ([`PacketStats::alerts_suppressed`](super::PacketStats::alerts_suppressed)); the
/// rejection itself is always counted and logged.
///
/// Default: 10 alerts per second, bursts of 20.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertRate {
    /// Sustained alerts per second.
    pub per_second: f64,
    /// Alerts that may go out at once.
    pub burst: u32,
}

impl Default for AlertRate {
    fn default() -> Self {
        AlertRate {
            per_second: 10.0,
            burst: 20,
        }
    }
}

/// A token bucket; time is passed in.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: AlertRate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: AlertRate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let cap = f64::from(self.rate.burst);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.rate.per_second.max(0.0)).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::inbound::{RejectReason, Rejection};
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn severities_follow_cap_notes() {
        use v1::AlertSeverity::*;
        assert_eq!(severity(ErrorCode::PROTOCOL_VERSION_MISMATCH), Error);
        assert_eq!(severity(ErrorCode::PROTOCOL_MALFORMED_PACKET), Error);
        assert_eq!(severity(ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD), Warning);
        assert_eq!(severity(ErrorCode::PROTOCOL_SIGNATURE_INVALID), Critical);
        assert_eq!(severity(ErrorCode::PROTOCOL_SIGNATURE_MISSING), Critical);
    }

    #[test]
    fn bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            AlertRate {
                per_second: 2.0,
                burst: 3,
            },
            t0,
        );
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + SECOND / 2));
        assert!(!b.try_take(t0 + SECOND / 2));
        // Long idle time refills only up to the burst.
        let later = t0 + SECOND * 100;
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn alerts_carry_no_payload_text() {
        let r = Rejection {
            code: ErrorCode::PROTOCOL_SIGNATURE_MISSING,
            reason: RejectReason::Signature("missing"),
            trace_id: Some("t-1".into()),
            sender_id: Some("mallory".into()),
            kind: Some(cap_proto::PayloadKind::JobRequest),
            answer: None,
        };
        let a = for_rejection(&r, "job.echo", "worker-1");
        assert_eq!(a.severity, v1::AlertSeverity::Critical as i32);
        assert_eq!(a.error_code_enum, 104);
        assert_eq!(a.level, "CRITICAL");
        assert_eq!(a.details["sender_id"], "mallory");
        assert_eq!(a.details["subject"], "job.echo");
        assert_eq!(a.trace_id, "t-1");
        assert!(
            a.message.contains("ERROR_CODE_PROTOCOL_SIGNATURE_MISSING"),
            "{}",
            a.message
        );
        cap_proto::validate::alert(&a).unwrap();
    }
}
