//! The in-memory bus's subscription table and its routing of one message.

use crate::Message;
use cap_proto::subject;
use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
use tokio::sync::mpsc::{self, error::TrySendError};

/// Counters one subscription shares with its stream handle.
#[derive(Debug, Default)]
pub(crate) struct SubCounters {
    pub(crate) dropped: AtomicU64,
}

/// One subscription as the router sees it.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<Message>,
    pub(crate) counters: Arc<SubCounters>,
}

struct Pattern {
    text: Box<str>,
    literal: bool,
}

impl Pattern {
    fn new(text: &str) -> Self {
        Pattern {
            literal: !text.split('.').any(|t| t == "*" || t == ">"),
            text: text.into(),
        }
    }

    #[inline]
    fn matches(&self, subject: &str) -> bool {
        if self.literal {
            &*self.text == subject
        } else {
            subject::matches(&self.text, subject)
        }
    }
}

struct Plain {
    pattern: Pattern,
    entry: Entry,
}

struct Group {
    pattern: Pattern,
    queue: Box<str>,
    members: Vec<Entry>,
    next: AtomicUsize,
}

/// Where one published message must go.
pub(crate) enum Outcome {
    /// Handed over.
    Delivered,
    /// The subscription is gone (its stream was dropped).
    Gone,
    /// The buffer was full and the policy is to drop: counted on the subscription.
    Dropped,
    /// The subscriber's buffer is full and the policy is to wait for room.
    Wait(mpsc::Sender<Message>, Message),
}

/// Every subscription of a bus.
#[derive(Default)]
pub(crate) struct Router {
    plain: Vec<Plain>,
    groups: Vec<Group>,
}

impl Router {
    pub(crate) fn add(&mut self, pattern: &str, queue: Option<&str>, entry: Entry) {
        match queue {
            None => self.plain.push(Plain {
                pattern: Pattern::new(pattern),
                entry,
            }),
            Some(q) => {
                if let Some(g) = self
                    .groups
                    .iter_mut()
                    .find(|g| &*g.queue == q && &*g.pattern.text == pattern)
                {
                    g.members.push(entry);
                } else {
                    self.groups.push(Group {
                        pattern: Pattern::new(pattern),
                        queue: q.into(),
                        members: vec![entry],
                        next: AtomicUsize::new(0),
                    });
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(i) = self.plain.iter().position(|p| p.entry.id == id) {
            self.plain.swap_remove(i);
            return;
        }
        for gi in 0..self.groups.len() {
            let members = &mut self.groups[gi].members;
            if let Some(i) = members.iter().position(|e| e.id == id) {
                // Keep member order: round-robin stays fair.
                members.remove(i);
                if members.is_empty() {
                    self.groups.swap_remove(gi);
                }
                return;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.plain.len() + self.groups.iter().map(|g| g.members.len()).sum::<usize>()
    }

    pub(crate) fn clear(&mut self) {
        self.plain.clear();
        self.groups.clear();
    }

    /// Routes `msg` to every matching plain subscription and one member of every
    /// matching queue group. `deliver` is called once per recipient. Returns the number
    /// of recipients (subscriptions that match, whether or not their buffer had room).
    pub(crate) fn route(&self, msg: &Message, mut deliver: impl FnMut(&Entry, Message)) -> usize {
        let subject = msg.subject();
        let mut matched = 0;
        for p in &self.plain {
            if p.pattern.matches(subject) && !p.entry.tx.is_closed() {
                matched += 1;
                deliver(&p.entry, msg.clone());
            }
        }
        for g in &self.groups {
            if !g.pattern.matches(subject) {
                continue;
            }
            let n = g.members.len();
            let start = g.next.fetch_add(1, Ordering::Relaxed) % n;
            // Prefer the member whose turn it is; if its buffer is full, the next one
            // with room; if all are full, the member whose turn it is (policy applies).
            let mut chosen = None;
            for k in 0..n {
                let e = &g.members[(start + k) % n];
                if e.tx.is_closed() {
                    continue;
                }
                if e.tx.capacity() > 0 {
                    chosen = Some(e);
                    break;
                }
                if chosen.is_none() {
                    chosen = Some(e);
                }
            }
            if let Some(e) = chosen {
                matched += 1;
                deliver(e, msg.clone());
            }
        }
        matched
    }
}

/// Tries to hand `msg` to `entry` without waiting.
pub(crate) fn try_deliver(entry: &Entry, msg: Message, wait_when_full: bool) -> Outcome {
    match entry.tx.try_send(msg) {
        Ok(()) => Outcome::Delivered,
        Err(TrySendError::Closed(_)) => Outcome::Gone,
        Err(TrySendError::Full(msg)) => {
            if wait_when_full {
                Outcome::Wait(entry.tx.clone(), msg)
            } else {
                entry.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Outcome::Dropped
            }
        }
    }
}
