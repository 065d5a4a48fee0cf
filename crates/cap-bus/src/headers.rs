//! [`Headers`]: message headers, a small ordered multi-map of text names to text values.

use crate::{Error, ErrorKind};
use std::sync::Arc;

/// Message headers: an ordered list of `(name, value)` pairs; a name may repeat.
///
/// Names are case-sensitive (as in NATS) and must be 1-256 bytes of visible ASCII
/// without `:`; values must not contain CR or LF and are at most 4096 bytes. These are
/// the limits every transport in this crate can carry, so they are checked when a header
/// is added, not when it is sent.
///
/// An empty `Headers` does not allocate, and a clone shares the pairs until one side
/// changes them (a message delivered to several subscribers carries one copy).
///
/// ```
/// use cap_bus::Headers;
/// let mut h = Headers::new();
/// h.insert("Trace-Id", "t-1").unwrap();
/// h.append("Hop", "a").unwrap();
/// h.append("Hop", "b").unwrap();
/// assert_eq!(h.get("Trace-Id"), Some("t-1"));
/// assert_eq!(h.get_all("Hop").collect::<Vec<_>>(), ["a", "b"]);
/// assert!(h.insert("bad name", "x").is_err());
/// assert!(h.insert("X", "line\nbreak").is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Headers {
    /// `None` while empty.
    entries: Option<Arc<Vec<(String, String)>>>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Eq for Headers {}

/// Longest header name accepted, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest header value accepted, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers { entries: None }
    }

    fn pairs(&self) -> &[(String, String)] {
        self.entries.as_deref().map_or(&[], Vec::as_slice)
    }

    fn pairs_mut(&mut self) -> &mut Vec<(String, String)> {
        Arc::make_mut(self.entries.get_or_insert_with(Default::default))
    }

    /// Sets `name` to `value`, replacing every earlier value of `name`.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), Error> {
        let (name, value) = checked(name.into(), value.into())?;
        let pairs = self.pairs_mut();
        pairs.retain(|(n, _)| *n != name);
        pairs.push((name, value));
        Ok(())
    }

    /// Adds a value for `name`, keeping earlier ones.
    pub fn append(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), Error> {
        let (name, value) = checked(name.into(), value.into())?;
        self.pairs_mut().push((name, value));
        Ok(())
    }

    /// Builder form of [`insert`](Headers::insert).
    pub fn with(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, Error> {
        self.insert(name, value)?;
        Ok(self)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in insertion order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs()
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        if !self.pairs().iter().any(|(n, _)| n == name) {
            return false;
        }
        self.pairs_mut().retain(|(n, _)| n != name);
        true
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// Bytes these headers take in the NATS wire format (`NATS/1.0\r\n`, one
    /// `name: value\r\n` line each, a final `\r\n`); 0 when empty. Transports use it to
    /// check the maximum message size the way a NATS server does.
    pub fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let lines: usize = self
            .pairs()
            .iter()
            .map(|(n, v)| n.len() + 2 + v.len() + 2)
            .sum();
        "NATS/1.0\r\n".len() + lines + 2
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

fn checked(name: String, value: String) -> Result<(String, String), Error> {
    if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("header name must be 1-{MAX_HEADER_NAME_LEN} bytes"),
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            "header name must be visible ASCII without ':'",
        ));
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("header value longer than {MAX_HEADER_VALUE_LEN} bytes"),
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            "header value contains CR or LF",
        ));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps() {
        let mut h = Headers::new();
        h.append("a", "1").unwrap();
        h.append("a", "2").unwrap();
        h.insert("a", "3").unwrap();
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["3"]);
        assert!(h.remove("a"));
        assert!(!h.remove("a"));
        assert!(h.is_empty());
    }

    #[test]
    fn rejects_what_nats_cannot_carry() {
        let mut h = Headers::new();
        for bad in ["", "a:b", "a b", "é", &"n".repeat(MAX_HEADER_NAME_LEN + 1)] {
            let err = h.insert(bad, "v").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidHeader, "{bad:?}");
        }
        for bad in ["a\rb", "a\nb", &"v".repeat(MAX_HEADER_VALUE_LEN + 1)] {
            assert_eq!(
                h.insert("n", bad).unwrap_err().kind(),
                ErrorKind::InvalidHeader
            );
        }
        assert!(h.is_empty());
        h.insert("n", "").unwrap();
        assert_eq!(h.get("n"), Some(""));
    }

    #[test]
    fn clones_share_until_changed_and_compare_by_pairs() {
        let a = Headers::new().with("traceparent", "00-x").unwrap();
        let mut b = a.clone();
        assert_eq!(a, b);
        b.insert("traceparent", "00-y").unwrap();
        assert_eq!(
            a.get("traceparent"),
            Some("00-x"),
            "the original is untouched"
        );
        assert_eq!(b.get("traceparent"), Some("00-y"));
        assert_ne!(a, b);
        // Emptied is equal to never filled.
        assert!(b.remove("traceparent"));
        assert_eq!(b, Headers::new());
        assert_eq!(b.wire_len(), 0);
    }

    #[test]
    fn wire_len_matches_nats_framing() {
        assert_eq!(Headers::new().wire_len(), 0);
        let h = Headers::new().with("Ab", "xyz").unwrap();
        assert_eq!(h.wire_len(), "NATS/1.0\r\nAb: xyz\r\n\r\n".len());
    }
}
