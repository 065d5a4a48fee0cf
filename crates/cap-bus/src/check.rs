//! Input checks every transport applies the same way: publish subjects, subscription
//! patterns, queue group names, message sizes. Custom transports should call these too,
//! so that they fail exactly where the built-in buses fail.

use crate::{Error, ErrorKind, Headers};
use cap_proto::subject::{self, MAX_SUBJECT_LEN, SubjectError};

/// Longest queue group name accepted, in bytes.
pub const MAX_QUEUE_LEN: usize = 256;

/// Checks a concrete publish subject (no wildcards); allocation-free.
///
/// ```
/// use cap_bus::{check, ErrorKind};
/// assert!(check::subject("sys.job.submit").is_ok());
/// assert_eq!(check::subject("job.*").unwrap_err().kind(), ErrorKind::InvalidSubject);
/// ```
pub fn subject(s: &str) -> Result<(), Error> {
    if !s.is_ascii() {
        // Rare: let cap-proto's char-aware check decide (Unicode whitespace etc.).
        return match subject::check_pattern(s) {
            Ok(()) if has_wildcard_token(s) => Err(SubjectError::Wildcard.into()),
            Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(SubjectError::Empty.into());
    }
    if bytes.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong.into());
    }
    let mut token_len = 0usize;
    for &b in bytes {
        match b {
            b'.' => {
                if token_len == 0 {
                    return Err(SubjectError::EmptyToken.into());
                }
                token_len = 0;
            }
            0..=b' ' | 0x7f => return Err(SubjectError::Whitespace.into()),
            b'*' | b'>' => return Err(SubjectError::Wildcard.into()),
            _ => token_len += 1,
        }
    }
    if token_len == 0 {
        return Err(SubjectError::EmptyToken.into());
    }
    Ok(())
}

fn has_wildcard_token(s: &str) -> bool {
    s.split('.').any(|t| t == "*" || t == ">")
}

/// Checks a subscription pattern (`*` and a final `>` allowed).
///
/// ```
/// use cap_bus::{check, ErrorKind};
/// assert!(check::pattern("job.>").is_ok());
/// assert_eq!(check::pattern("job.>.x").unwrap_err().kind(), ErrorKind::InvalidPattern);
/// ```
pub fn pattern(p: &str) -> Result<(), Error> {
    subject::check_pattern(p)
        .map_err(|e| Error::with_source(ErrorKind::InvalidPattern, e.to_string(), e))
}

/// Checks a queue group name: 1-256 bytes, no whitespace or control characters.
pub fn queue(q: &str) -> Result<(), Error> {
    if q.is_empty() || q.len() > MAX_QUEUE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidPattern,
            format!("queue group name must be 1-{MAX_QUEUE_LEN} bytes"),
        ));
    }
    if q.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::new(
            ErrorKind::InvalidPattern,
            "queue group name contains whitespace or a control character",
        ));
    }
    Ok(())
}

/// Checks that `payload_len` bytes plus `headers` fit in `max` (when there is a max).
pub fn size(headers: &Headers, payload_len: usize, max: Option<usize>) -> Result<(), Error> {
    let Some(max) = max else { return Ok(()) };
    let size = payload_len.saturating_add(headers.wire_len());
    if size > max {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!("message of {size} bytes exceeds the maximum of {max}"),
        ));
    }
    Ok(())
}

/// Whether every subject matched by `pattern` is also matched by `cover` (both valid
/// patterns). Used to decide whether a subscription lies inside a durable subject set.
///
/// ```
/// use cap_bus::check::covers;
/// assert!(covers("job.>", "job.echo"));
/// assert!(covers("job.>", "job.*.x"));
/// assert!(!covers("job.*", "job.>"));
/// assert!(!covers("job.echo", "job.*"));
/// ```
pub fn covers(cover: &str, pattern: &str) -> bool {
    let mut c = cover.split('.');
    let mut p = pattern.split('.');
    loop {
        match (c.next(), p.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::Subject;

    #[test]
    fn fast_subject_check_agrees_with_cap_proto() {
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        let cases = [
            "a",
            "sys.job.submit",
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a\tb",
            "a\u{0}b",
            "job.*",
            "job.>",
            "a*",
            "x>",
            "é.ü",
            "a\u{a0}b",
            "a.\u{2003}",
            &long,
        ];
        for s in cases {
            let want = Subject::new(s).err();
            let got = subject(s).err().map(|e| e.kind());
            assert_eq!(got.is_some(), want.is_some(), "{s:?}: {got:?} vs {want:?}");
            if let Some(kind) = got {
                assert_eq!(kind, ErrorKind::InvalidSubject);
            }
        }
    }

    #[test]
    fn queues_and_sizes() {
        assert!(queue("job.echo").is_ok());
        for bad in ["", "a b", "a\nb", &"q".repeat(MAX_QUEUE_LEN + 1)] {
            assert_eq!(queue(bad).unwrap_err().kind(), ErrorKind::InvalidPattern);
        }
        let h = Headers::new().with("k", "v").unwrap();
        assert!(size(&Headers::new(), 10, Some(10)).is_ok());
        assert!(size(&Headers::new(), 10, None).is_ok());
        assert_eq!(
            size(&h, 10, Some(10)).unwrap_err().kind(),
            ErrorKind::PayloadTooLarge
        );
    }

    #[test]
    fn coverage() {
        let cases = [
            (">", "a", true),
            (">", "a.>", true),
            ("a.>", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a.*", true),
            ("a.*", "a.b.c", false),
            ("a.*", "a.>", false),
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("sys.job.submit", "sys.job.*", false),
        ];
        for (c, p, want) in cases {
            assert_eq!(covers(c, p), want, "{c} covers {p}");
        }
    }
}
