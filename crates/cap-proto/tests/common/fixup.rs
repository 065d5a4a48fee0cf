//! Turning a random packet into a valid one, rule by rule, where each repair may be
//! skipped: with every repair applied the packet passes our validation (and so must pass
//! the peer's); with a few skipped it breaks exactly those rules. That puts the property
//! tests right on the boundary of the validation rules.

use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, Timestamp};

/// Which repairs to make: the n-th repair is made when the n-th flag is true (and when
/// there are fewer flags than repairs).
pub struct Fixer {
    flags: Vec<bool>,
    next: usize,
}

impl Fixer {
    pub fn new(flags: Vec<bool>) -> Self {
        Fixer { flags, next: 0 }
    }

    /// Every repair made.
    pub fn all() -> Self {
        Fixer::new(Vec::new())
    }

    fn go(&mut self) -> bool {
        let v = self.flags.get(self.next).copied().unwrap_or(true);
        self.next += 1;
        v
    }

    /// How many repairs were skipped.
    pub fn skipped(&self) -> usize {
        self.flags[..self.next.min(self.flags.len())]
            .iter()
            .filter(|f| !**f)
            .count()
    }
}

pub const NOW: Timestamp = Timestamp {
    seconds: 1_750_000_000,
    nanos: 0,
};

fn valid_ts(ts: &Option<Timestamp>) -> bool {
    ts.as_ref().is_none_or(|t| {
        cap_proto::validate::TIMESTAMP_SECONDS.contains(&t.seconds)
            && (0..1_000_000_000).contains(&t.nanos)
    })
}

fn fix_ts(f: &mut Fixer, ts: &mut Option<Timestamp>) {
    if !valid_ts(ts) && f.go() {
        *ts = Some(NOW);
    }
}

fn non_empty(f: &mut Fixer, s: &mut String, value: &str) {
    if s.trim().is_empty() && f.go() {
        *s = value.to_owned();
    }
}

fn fix_refs(
    f: &mut Fixer,
    dispatch: &mut Option<v1::DispatchIdentity>,
    refs: &mut [&mut Option<v1::ResourceRef>],
) {
    let _ = dispatch;
    for r in refs.iter_mut() {
        if let Some(r) = r.as_mut() {
            fix_ts(f, &mut r.expires_at);
        }
    }
}

fn fix_artifacts(f: &mut Fixer, refs: &mut [v1::ResourceRef]) {
    for r in refs {
        fix_ts(f, &mut r.expires_at);
    }
}

fn fix_budget(f: &mut Fixer, b: &mut Option<v1::Budget>) {
    if let Some(b) = b {
        for v in [
            &mut b.max_input_tokens,
            &mut b.max_output_tokens,
            &mut b.max_total_tokens,
        ] {
            if !(0..=cap_proto::validate::MAX_BUDGET).contains(v) && f.go() {
                *v = 10;
            }
        }
        if b.deadline_ms < 0 && f.go() {
            b.deadline_ms = 1000;
        }
    }
}

fn fix_meta(f: &mut Fixer, m: &mut Option<v1::JobMetadata>) {
    if let Some(m) = m
        && !(0..=2).contains(&m.actor_type)
        && f.go()
    {
        m.actor_type = 1;
    }
}

fn fix_hints(f: &mut Fixer, h: &mut Option<v1::ContextHints>) {
    if let Some(h) = h
        && h.max_input_tokens < 0
        && f.go()
    {
        h.max_input_tokens = 0;
    }
}

fn fix_priority(f: &mut Fixer, p: &mut i32) {
    if !(0..=3).contains(p) && f.go() {
        *p = 1;
    }
}

fn fix_pointer(f: &mut Fixer, p: &mut String) {
    if !p.is_empty() && cap_proto::Pointer::check(p).is_err() && f.go() {
        *p = "redis://ctx:job-1".into();
    }
}

fn fix_topic(f: &mut Fixer, t: &mut String) {
    if cap_proto::subject::check_subject(t).is_err() && f.go() {
        *t = "job.echo".into();
    }
}

fn job_request(f: &mut Fixer, r: &mut v1::JobRequest) {
    non_empty(f, &mut r.job_id, "job-1");
    fix_topic(f, &mut r.topic);
    fix_priority(f, &mut r.priority);
    fix_pointer(f, &mut r.context_ptr);
    if r.step_index < 0 && f.go() {
        r.step_index = 0;
    }
    fix_hints(f, &mut r.context_hints);
    fix_budget(f, &mut r.budget);
    fix_meta(f, &mut r.meta);
    if let Some(c) = &mut r.compensation {
        fix_topic(f, &mut c.topic);
        fix_pointer(f, &mut c.context_ptr);
        fix_priority(f, &mut c.priority);
        fix_hints(f, &mut c.context_hints);
        fix_budget(f, &mut c.budget);
        fix_meta(f, &mut c.meta);
        fix_refs(f, &mut c.dispatch, &mut [&mut c.context_ref]);
    }
    fix_refs(f, &mut r.dispatch, &mut [&mut r.context_ref]);
}

fn status(f: &mut Fixer, s: &mut i32, allow_zero: bool) {
    let ok = (allow_zero && *s == 0) || (1..=11).contains(s);
    if !ok && f.go() {
        *s = 5;
    }
}

fn percent(f: &mut Fixer, v: &mut f32) {
    if !(0.0..=100.0).contains(v) && f.go() {
        *v = 50.0;
    }
}

fn trust_challenge(f: &mut Fixer, c: &mut v1::WorkerHandshakeChallenge, trace: &str, worker: &str) {
    non_empty(f, &mut c.request_id, "req-1");
    non_empty(f, &mut c.challenge_id, "ch-1");
    if c.trace_id != trace && f.go() {
        c.trace_id = trace.to_owned();
    }
    non_empty(f, &mut c.worker_id, worker);
    non_empty(f, &mut c.agent_id, "agent-1");
    non_empty(f, &mut c.tenant_id, "tenant-1");
    non_empty(f, &mut c.proof_key_id, "key-1");
    non_empty(f, &mut c.server_key_id, "server-key-1");
    non_empty(f, &mut c.audience, "cordum-scheduler");
    non_empty(f, &mut c.sdk_version, "cap-rs/test");
    if c.protocol_version != 1 && f.go() {
        c.protocol_version = 1;
    }
    if !(1..=2).contains(&c.purpose) && f.go() {
        c.purpose = 1;
    }
    if c.proof_algorithm != 1 && f.go() {
        c.proof_algorithm = 1;
    }
    if c.client_nonce.len() != 32 && f.go() {
        c.client_nonce = vec![7; 32];
    }
    if c.server_nonce.len() != 32 && f.go() {
        c.server_nonce = vec![9; 32];
    }
    let ok = |t: &Option<Timestamp>| valid_ts(t);
    let micros = |t: &Option<Timestamp>| {
        let t = t.unwrap_or_default();
        t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
    };
    let lifetime_ok = ok(&c.issued_at)
        && ok(&c.expires_at)
        && micros(&c.expires_at) > micros(&c.issued_at)
        && micros(&c.expires_at) - micros(&c.issued_at) <= 60_000_000;
    if !lifetime_ok && f.go() {
        c.issued_at = Some(NOW);
        c.expires_at = Some(Timestamp {
            seconds: NOW.seconds + 30,
            nanos: 0,
        });
    }
}

fn token(f: &mut Fixer, p: &mut v1::BusPacket, want: bool) {
    let valid = !p.auth_token.is_empty()
        && p.auth_token.len() <= 16 * 1024
        && p.auth_token.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if want && !valid && f.go() {
        p.auth_token = "session-token".into();
    }
    if !want && !p.auth_token.is_empty() && f.go() {
        p.auth_token.clear();
    }
}

fn signed(f: &mut Fixer, p: &mut v1::BusPacket) {
    if p.signature.is_empty() && f.go() {
        p.signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01].into();
    }
}

fn trust(f: &mut Fixer, p: &mut v1::BusPacket) {
    let trace = p.trace_id.clone();
    let sender = p.sender_id.clone();
    let mut payload = p.payload.take();
    match &mut payload {
        Some(Payload::WorkerHandshakeChallengeRequest(r)) => {
            non_empty(f, &mut r.request_id, "req-1");
            if r.trace_id != trace && f.go() {
                r.trace_id.clone_from(&trace);
            }
            if r.worker_id != sender && f.go() {
                r.worker_id.clone_from(&sender);
            }
            non_empty(f, &mut r.proof_key_id, "key-1");
            non_empty(f, &mut r.audience, "cordum-scheduler");
            non_empty(f, &mut r.sdk_version, "cap-rs/test");
            if r.protocol_version != 1 && f.go() {
                r.protocol_version = 1;
            }
            if !(1..=2).contains(&r.purpose) && f.go() {
                r.purpose = 2;
            }
            if r.proof_algorithm != 1 && f.go() {
                r.proof_algorithm = 1;
            }
            if r.client_nonce.len() != 32 && f.go() {
                r.client_nonce = vec![1; 32];
            }
            token(f, p, false);
            signed(f, p);
        }
        Some(Payload::WorkerHandshakeChallenge(c)) => {
            trust_challenge(f, c, &trace, &sender);
            token(f, p, false);
            signed(f, p);
        }
        Some(Payload::WorkerHandshakeAuthenticate(a)) => {
            if a.challenge.is_none() && f.go() {
                a.challenge = Some(Default::default());
            }
            if a.capability_handshake.is_none() && f.go() {
                a.capability_handshake = Some(Default::default());
            }
            let mut purpose = 0;
            if let Some(c) = &mut a.challenge {
                trust_challenge(f, c, &trace, &sender);
                if c.worker_id != sender && f.go() {
                    c.worker_id.clone_from(&sender);
                }
                purpose = c.purpose;
                if let Some(h) = &mut a.capability_handshake {
                    if h.component_id != c.worker_id && f.go() {
                        h.component_id.clone_from(&c.worker_id);
                    }
                    if h.role != 3 && f.go() {
                        h.role = 3;
                    }
                    if h.sdk_version != c.sdk_version && f.go() {
                        h.sdk_version.clone_from(&c.sdk_version);
                    }
                    if h.supported_versions != [1] && f.go() {
                        h.supported_versions = vec![1];
                    }
                    let bad_caps = h.capabilities.iter().any(|(k, on)| {
                        !on || k.is_empty()
                            || k.len() > 64
                            || !k.as_bytes()[0].is_ascii_lowercase()
                            || !k.bytes().all(|b| {
                                b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)
                            })
                    });
                    if bad_caps && f.go() {
                        h.capabilities = [("progress".to_string(), true)].into();
                    }
                    let mut seen = std::collections::HashSet::new();
                    let bad_topics = h.ready_topics.iter().any(|t| {
                        cap_proto::subject::check_pattern(t).is_err() || !seen.insert(t.clone())
                    });
                    if bad_topics && f.go() {
                        h.ready_topics = vec!["job.echo".into()];
                    }
                }
            }
            signed(f, p);
            match purpose {
                1 => token(f, p, false),
                2 => token(f, p, true),
                _ => {}
            }
        }
        Some(Payload::WorkerHandshakeResult(r)) => {
            if r.challenge.is_none() && f.go() {
                r.challenge = Some(Default::default());
            }
            if let Some(c) = &mut r.challenge {
                trust_challenge(f, c, &trace, &sender);
            }
            fix_ts(f, &mut r.issued_at);
            if r.accepted {
                let issued = r.issued_at.unwrap_or_default();
                let later = |t: &Timestamp| {
                    (t.seconds, t.nanos / 1000) > (issued.seconds, issued.nanos / 1000)
                };
                let ok = r
                    .token_expires_at
                    .as_ref()
                    .is_some_and(|t| valid_ts(&Some(*t)) && later(t));
                if !ok && f.go() {
                    r.token_expires_at = Some(Timestamp {
                        seconds: issued.seconds.saturating_add(600),
                        nanos: 0,
                    });
                }
                if r.rejection_reason != 0 && f.go() {
                    r.rejection_reason = 0;
                }
                token(f, p, true);
            } else {
                if !(1..=9).contains(&r.rejection_reason) && f.go() {
                    r.rejection_reason = 2;
                }
                if r.token_expires_at.is_some() && f.go() {
                    r.token_expires_at = None;
                }
                token(f, p, false);
            }
            signed(f, p);
        }
        _ => {}
    }
    p.payload = payload;
}

/// Repairs `p` (see the module docs). Every repair made → valid under our rules.
pub fn make_valid(f: &mut Fixer, p: &mut v1::BusPacket) {
    if p.trace_id.is_empty() && f.go() {
        p.trace_id = "trace-1".into();
    }
    if p.sender_id.is_empty() && f.go() {
        p.sender_id = "sender-1".into();
    }
    if (p.created_at.is_none() || !valid_ts(&p.created_at)) && f.go() {
        p.created_at = Some(NOW);
    }
    if p.protocol_version != 1 && f.go() {
        p.protocol_version = 1;
    }
    if let Some(m) = &mut p.signature_metadata {
        fix_ts(f, &mut m.expires_at);
    }
    let sender = p.sender_id.clone();
    match &mut p.payload {
        None => {
            if f.go() {
                p.payload = Some(Payload::JobCancel(v1::JobCancel {
                    job_id: "job-1".into(),
                    requested_by: "alice".into(),
                    ..Default::default()
                }));
            }
        }
        Some(Payload::JobRequest(r)) => job_request(f, r),
        Some(Payload::JobResult(r)) => {
            non_empty(f, &mut r.job_id, "job-1");
            status(f, &mut r.status, false);
            fix_pointer(f, &mut r.result_ptr);
            if r.worker_id != sender && f.go() {
                r.worker_id.clone_from(&sender);
            }
            if r.execution_ms < 0 && f.go() {
                r.execution_ms = 0;
            }
            if r.artifact_ptrs
                .iter()
                .any(|a| cap_proto::Pointer::check(a).is_err())
                && f.go()
            {
                r.artifact_ptrs = vec!["redis://a:1".into()];
            }
            fix_refs(f, &mut r.dispatch, &mut [&mut r.result_ref]);
            fix_artifacts(f, &mut r.artifact_refs);
        }
        Some(Payload::Heartbeat(h)) => {
            if h.worker_id != sender && f.go() {
                h.worker_id.clone_from(&sender);
            }
            percent(f, &mut h.cpu_load);
            percent(f, &mut h.gpu_utilization);
            percent(f, &mut h.memory_load);
            if h.active_jobs < 0 && f.go() {
                h.active_jobs = 0;
            }
            if h.max_parallel_jobs < 0 && f.go() {
                h.max_parallel_jobs = 1;
            }
            if !(0..=100).contains(&h.progress_pct) && f.go() {
                h.progress_pct = 0;
            }
        }
        Some(Payload::Alert(a)) => {
            non_empty(f, &mut a.message, "something happened");
            let structured =
                a.severity != 0 || a.error_code_enum != 0 || !a.source_component.is_empty();
            if structured {
                if !(1..=4).contains(&a.severity) && f.go() {
                    a.severity = 3;
                }
                let code = ErrorCode::from_i32(a.error_code_enum);
                if (code == ErrorCode::UNSPECIFIED || !code.is_known()) && f.go() {
                    a.error_code_enum = 101;
                }
                if a.source_component != sender && f.go() {
                    a.source_component.clone_from(&sender);
                }
            } else {
                non_empty(f, &mut a.level, "ERROR");
                non_empty(f, &mut a.component, "worker");
                non_empty(f, &mut a.code, "SIG");
            }
        }
        Some(Payload::JobProgress(m)) => {
            non_empty(f, &mut m.job_id, "job-1");
            if !(0..=100).contains(&m.percent) && f.go() {
                m.percent = 50;
            }
            fix_pointer(f, &mut m.result_ptr);
            if m.artifact_ptrs
                .iter()
                .any(|a| cap_proto::Pointer::check(a).is_err())
                && f.go()
            {
                m.artifact_ptrs.clear();
            }
            status(f, &mut m.status, true);
            fix_refs(f, &mut m.dispatch, &mut [&mut m.result_ref]);
            fix_artifacts(f, &mut m.artifact_refs);
        }
        Some(Payload::JobCancel(m)) => {
            non_empty(f, &mut m.job_id, "job-1");
            non_empty(f, &mut m.requested_by, "alice");
        }
        Some(Payload::Handshake(h)) => {
            if h.component_id != sender && f.go() {
                h.component_id.clone_from(&sender);
            }
            if !(1..=5).contains(&h.role) && f.go() {
                h.role = 3;
            }
            if (h.supported_versions.is_empty() || h.supported_versions.iter().any(|v| *v <= 0))
                && f.go()
            {
                h.supported_versions = vec![1];
            }
            if h.ready_topics
                .iter()
                .any(|t| cap_proto::subject::check_pattern(t).is_err())
                && f.go()
            {
                h.ready_topics = vec!["job.echo".into()];
            }
        }
        Some(_) => trust(f, p),
    }
}
