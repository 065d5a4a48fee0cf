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
/// The pairs live in one shared buffer, one `name: value\r\n` line each (the NATS
/// layout): an empty `Headers` does not allocate, a filled one is one allocation however
/// many pairs it holds, and a clone shares it until one side changes it (a message
/// delivered to several subscribers carries one copy).
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
    /// `name: value\r\n` lines; `None` while empty.
    lines: Option<Arc<str>>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
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
        Headers { lines: None }
    }

    fn text(&self) -> &str {
        self.lines.as_deref().unwrap_or("")
    }

    /// The pairs, in order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        Headers::split(self.text())
    }

    /// Replaces the lines with `keep` (pairs of the current ones) followed by `added`.
    fn rebuild<'a>(
        &mut self,
        keep: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        added: Option<(&'a str, &'a str)>,
    ) {
        let line = |(n, v): (&str, &str)| n.len() + 2 + v.len() + 2;
        let len = keep.clone().map(line).sum::<usize>() + added.map_or(0, line);
        if len == 0 {
            self.lines = None;
            return;
        }
        let parts = keep.chain(added).flat_map(|(n, v)| [n, ": ", v, "\r\n"]);
        // Most header sets are a line or two: written on the stack, they take one
        // allocation (the shared one) instead of two.
        let mut stack = [0u8; 256];
        if let Some(buf) = stack.get_mut(..len) {
            let mut at = 0;
            for part in parts.clone() {
                buf[at..at + part.len()].copy_from_slice(part.as_bytes());
                at += part.len();
            }
            // Whole `str`s copied end to end: valid UTF-8 (checked on the ASCII path).
            if let Ok(text) = std::str::from_utf8(buf) {
                self.lines = Some(Arc::from(text));
                return;
            }
        }
        let text: String = parts.collect();
        self.lines = Some(Arc::from(text));
    }

    /// The lines of a single pair, as one shared buffer. Packets usually carry one or two
    /// headers, so adding to empty headers skips [`rebuild`](Self::rebuild): it runs on
    /// every packet published with trace context.
    fn single(name: &str, value: &str) -> Arc<str> {
        let len = name.len() + 2 + value.len() + 2;
        let mut stack = [0u8; 128];
        if let Some(buf) = stack.get_mut(..len) {
            let (n, rest) = buf.split_at_mut(name.len());
            n.copy_from_slice(name.as_bytes());
            let (sep, rest) = rest.split_at_mut(2);
            sep.copy_from_slice(b": ");
            let (v, end) = rest.split_at_mut(value.len());
            v.copy_from_slice(value.as_bytes());
            end.copy_from_slice(b"\r\n");
            // Whole `str`s copied end to end: valid UTF-8.
            if let Ok(text) = std::str::from_utf8(buf) {
                return Arc::from(text);
            }
        }
        Arc::from([name, ": ", value, "\r\n"].concat())
    }

    /// Sets `name` to `value`, replacing every earlier value of `name`.
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Result<(), Error> {
        let (name, value) = checked(name.as_ref(), value.as_ref())?;
        if self.lines.is_none() {
            self.lines = Some(Headers::single(name, value));
            return Ok(());
        }
        let old = self.lines.take();
        let text = old.as_deref().unwrap_or("");
        let keep = Headers::split(text).filter(|(n, _)| *n != name);
        self.rebuild(keep, Some((name, value)));
        Ok(())
    }

    /// Adds a value for `name`, keeping earlier ones.
    pub fn append(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Result<(), Error> {
        let (name, value) = checked(name.as_ref(), value.as_ref())?;
        if self.lines.is_none() {
            self.lines = Some(Headers::single(name, value));
            return Ok(());
        }
        let old = self.lines.take();
        self.rebuild(
            Headers::split(old.as_deref().unwrap_or("")),
            Some((name, value)),
        );
        Ok(())
    }

    /// The pairs of `text`: lines as [`rebuild`](Self::rebuild) writes them,
    /// `name: value\r\n`, the name without `:`, the value without CR or LF.
    fn split(text: &str) -> impl Iterator<Item = (&str, &str)> + Clone {
        let mut rest = text;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // Vectorised byte searches: this runs for every header read.
            let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or("");
            let line = line.strip_suffix('\r').unwrap_or(line);
            let colon = memchr::memchr(b':', line.as_bytes()).unwrap_or(line.len());
            let (name, value) = line.split_at(colon);
            let value = value.get(1..).unwrap_or("");
            Some((name, value.strip_prefix(' ').unwrap_or(value)))
        })
    }

    /// Builder form of [`insert`](Headers::insert).
    pub fn with(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Result<Self, Error> {
        self.insert(name, value)?;
        Ok(self)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Runs for every packet received with headers: each line is matched on its
        // first bytes, and only the matching one is split.
        let mut rest = self.text();
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
            let (line, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or("");
            if let Some(value) = line.strip_prefix(name).and_then(|v| v.strip_prefix(':')) {
                let value = value.strip_suffix('\r').unwrap_or(value);
                return Some(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        None
    }

    /// Every value of `name`, in insertion order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        if !self.pairs().any(|(n, _)| n == name) {
            return false;
        }
        let old = self.lines.take();
        let keep = Headers::split(old.as_deref().unwrap_or("")).filter(|(n, _)| *n != name);
        self.rebuild(keep, None);
        true
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs().count()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.lines.is_none()
    }

    /// Bytes these headers take in the NATS wire format (`NATS/1.0\r\n`, one
    /// `name: value\r\n` line each, a final `\r\n`); 0 when empty. Transports use it to
    /// check the maximum message size the way a NATS server does.
    pub fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        "NATS/1.0\r\n".len() + self.text().len() + 2
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

fn checked<'a>(name: &'a str, value: &'a str) -> Result<(&'a str, &'a str), Error> {
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
    if memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_some() {
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
    fn first_pair_round_trips_at_any_length() {
        // Short, around the in-place buffer's size, and past it.
        for len in [0, 1, 55, 117, 118, 119, 200, MAX_HEADER_VALUE_LEN] {
            let value = "v".repeat(len);
            let mut h = Headers::new();
            h.insert("traceparent", &value).unwrap();
            assert_eq!(h.get("traceparent"), Some(value.as_str()), "{len}");
            assert_eq!(h.len(), 1);
            assert_eq!(h.wire_len(), "NATS/1.0\r\n".len() + 11 + 2 + len + 2 + 2);
            let mut a = Headers::new();
            a.append("traceparent", &value).unwrap();
            assert_eq!(a, h);
            h.append("tracestate", "k=v").unwrap();
            assert_eq!(h.get("tracestate"), Some("k=v"));
            assert_eq!(h.get("traceparent"), Some(value.as_str()));
        }
    }

    #[test]
    fn values_round_trip_exactly_in_order() {
        let mut h = Headers::new();
        h.append("A", " leading space").unwrap();
        h.append("B", "x: y: z").unwrap();
        h.append("A", "").unwrap();
        h.insert("C", "c").unwrap();
        let pairs: Vec<_> = h.iter().collect();
        assert_eq!(
            pairs,
            [
                ("A", " leading space"),
                ("B", "x: y: z"),
                ("A", ""),
                ("C", "c")
            ]
        );
        assert_eq!(h.len(), 4);
        // Replacing keeps the others in order; the replaced value goes last.
        h.insert("A", "a").unwrap();
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("B", "x: y: z"), ("C", "c"), ("A", "a")]
        );
        let wire: usize = h.iter().map(|(n, v)| n.len() + 2 + v.len() + 2).sum();
        assert_eq!(h.wire_len(), "NATS/1.0\r\n".len() + wire + 2);
        // Past what is written on the stack: the same.
        let long = "v".repeat(MAX_HEADER_VALUE_LEN);
        h.append("Long", &long).unwrap();
        assert_eq!(h.get("Long"), Some(long.as_str()));
        assert_eq!(h.get("C"), Some("c"));
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn wire_len_matches_nats_framing() {
        assert_eq!(Headers::new().wire_len(), 0);
        let h = Headers::new().with("Ab", "xyz").unwrap();
        assert_eq!(h.wire_len(), "NATS/1.0\r\nAb: xyz\r\n\r\n".len());
    }
}
