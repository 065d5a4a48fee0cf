//! Pointers: the opaque URIs in `context_ptr`, `result_ptr` and `artifact_ptrs`.
//!
//! ```
//! use cap_proto::Pointer;
//! let p: Pointer = "redis://ctx:job-1".parse().unwrap();
//! assert_eq!(p, Pointer::context("job-1"));
//! assert_eq!(p.scheme(), "redis");
//! assert_eq!(p.key(), "ctx:job-1");
//! assert!("redis://user:pw@host/0".parse::<Pointer>().is_err());
//! assert!("file://relative/path".parse::<Pointer>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// Longest pointer accepted, in bytes.
pub const MAX_POINTER_LEN: usize = 2048;

/// Key prefix of job contexts (`ctx:<job_id>`).
pub const CONTEXT_PREFIX: &str = "ctx:";
/// Key prefix of job results (`res:<job_id>`).
pub const RESULT_PREFIX: &str = "res:";

/// A parsed, well-formed pointer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pointer {
    /// `redis://<key>`: a key in the Redis blob store.
    Redis {
        /// The Redis key, e.g. `ctx:<job_id>`.
        key: String,
    },
    /// `mem://<key>`: a key in an in-process store.
    Mem {
        /// The key.
        key: String,
    },
    /// `s3://<bucket>/<key>`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// `file:///<absolute path>`.
    File {
        /// The absolute path, starting with `/`.
        path: String,
    },
    /// `https://<host>/<path>`.
    Https {
        /// The full URL.
        url: String,
    },
}

/// Why a string is not an acceptable pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PointerError {
    /// The pointer is empty.
    #[error("pointer is empty")]
    Empty,
    /// Longer than [`MAX_POINTER_LEN`].
    #[error("pointer is longer than {MAX_POINTER_LEN} bytes")]
    TooLong,
    /// Contains NUL, another control character or whitespace.
    #[error("pointer contains a control character or whitespace")]
    ControlCharacter,
    /// Not of the form `scheme://…`.
    #[error("pointer has no scheme (expected scheme://…)")]
    NoScheme,
    /// A scheme this library does not know.
    #[error("unsupported pointer scheme `{0}`")]
    UnsupportedScheme(String),
    /// The part after the scheme is missing or incomplete.
    #[error("pointer has no key or path")]
    MissingKey,
    /// A relative `file://` path, or one with `..` segments.
    #[error("file pointer must be an absolute path without `..` (file:///path)")]
    RelativePath,
    /// User credentials in the pointer (`user:pass@`).
    #[error("pointer carries credentials")]
    Credentials,
}

impl Pointer {
    /// The pointer to a job's context in the Redis store: `redis://ctx:<job_id>`.
    pub fn context(job_id: &str) -> Self {
        Pointer::Redis {
            key: format!("{CONTEXT_PREFIX}{job_id}"),
        }
    }

    /// The pointer to a job's result in the Redis store: `redis://res:<job_id>`.
    pub fn result(job_id: &str) -> Self {
        Pointer::Redis {
            key: format!("{RESULT_PREFIX}{job_id}"),
        }
    }

    /// Parses and checks a pointer.
    pub fn parse(s: &str) -> Result<Self, PointerError> {
        Ok(match Parts::split(s)? {
            Parts::Redis(key) => Pointer::Redis {
                key: key.to_owned(),
            },
            Parts::Mem(key) => Pointer::Mem {
                key: key.to_owned(),
            },
            Parts::S3 { bucket, key } => Pointer::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
            Parts::File(path) => Pointer::File {
                path: path.to_owned(),
            },
            Parts::Https(url) => Pointer::Https {
                url: url.to_owned(),
            },
        })
    }

    /// Checks a pointer as [`parse`](Self::parse) does, without building it (no
    /// allocation unless the scheme is unknown).
    pub fn check(s: &str) -> Result<(), PointerError> {
        Parts::split(s).map(|_| ())
    }
}

/// A checked pointer, borrowing its parts from the text.
enum Parts<'a> {
    Redis(&'a str),
    Mem(&'a str),
    S3 { bucket: &'a str, key: &'a str },
    File(&'a str),
    Https(&'a str),
}

impl<'a> Parts<'a> {
    fn split(s: &'a str) -> Result<Self, PointerError> {
        if s.is_empty() {
            return Err(PointerError::Empty);
        }
        if s.len() > MAX_POINTER_LEN {
            return Err(PointerError::TooLong);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(PointerError::ControlCharacter);
        }
        let (scheme, rest) = s.split_once("://").ok_or(PointerError::NoScheme)?;
        if scheme.is_empty() {
            return Err(PointerError::NoScheme);
        }
        let authority = rest.split('/').next().unwrap_or_default();
        match scheme {
            "redis" | "mem" => {
                if rest.is_empty() {
                    return Err(PointerError::MissingKey);
                }
                if authority.contains('@') {
                    return Err(PointerError::Credentials);
                }
                Ok(if scheme == "redis" {
                    Parts::Redis(rest)
                } else {
                    Parts::Mem(rest)
                })
            }
            "s3" => {
                let (bucket, key) = rest.split_once('/').ok_or(PointerError::MissingKey)?;
                if bucket.is_empty() || key.is_empty() {
                    return Err(PointerError::MissingKey);
                }
                if bucket.contains('@') {
                    return Err(PointerError::Credentials);
                }
                Ok(Parts::S3 { bucket, key })
            }
            "file" => {
                let path = rest
                    .strip_prefix("localhost")
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or(rest);
                if path.is_empty() {
                    return Err(PointerError::MissingKey);
                }
                if !path.starts_with('/') || path.split('/').any(|seg| seg == "..") {
                    return Err(PointerError::RelativePath);
                }
                if path == "/" {
                    return Err(PointerError::MissingKey);
                }
                Ok(Parts::File(path))
            }
            "https" => {
                if authority.is_empty() {
                    return Err(PointerError::MissingKey);
                }
                if authority.contains('@') {
                    return Err(PointerError::Credentials);
                }
                Ok(Parts::Https(s))
            }
            other => Err(PointerError::UnsupportedScheme(other.to_owned())),
        }
    }
}

impl Pointer {
    /// The scheme: `redis`, `mem`, `s3`, `file` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Pointer::Redis { .. } => "redis",
            Pointer::Mem { .. } => "mem",
            Pointer::S3 { .. } => "s3",
            Pointer::File { .. } => "file",
            Pointer::Https { .. } => "https",
        }
    }

    /// The store key: the Redis or in-memory key, the S3 object key, the file path, or
    /// the URL.
    pub fn key(&self) -> &str {
        match self {
            Pointer::Redis { key } | Pointer::Mem { key } | Pointer::S3 { key, .. } => key,
            Pointer::File { path } => path,
            Pointer::Https { url } => url,
        }
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pointer::Redis { key } => write!(f, "redis://{key}"),
            Pointer::Mem { key } => write!(f, "mem://{key}"),
            Pointer::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Pointer::File { path } => write!(f, "file://{path}"),
            Pointer::Https { url } => f.write_str(url),
        }
    }
}

impl FromStr for Pointer {
    type Err = PointerError;
    fn from_str(s: &str) -> Result<Self, PointerError> {
        Pointer::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_round_trips() {
        let cases = [
            ("redis://ctx:job-1", "redis", "ctx:job-1"),
            ("redis://res:abc", "redis", "res:abc"),
            ("mem://k", "mem", "k"),
            ("s3://bucket/a/b.json", "s3", "a/b.json"),
            ("file:///var/lib/cap/x", "file", "/var/lib/cap/x"),
            (
                "https://example.org/blob/1",
                "https",
                "https://example.org/blob/1",
            ),
        ];
        for (s, scheme, key) in cases {
            let p = Pointer::parse(s).unwrap();
            assert_eq!(p.scheme(), scheme);
            assert_eq!(p.key(), key);
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            Pointer::parse("file://localhost/tmp/x").unwrap(),
            Pointer::File {
                path: "/tmp/x".into()
            }
        );
    }

    #[test]
    fn rejects_bad_pointers() {
        let cases = [
            ("", PointerError::Empty),
            ("ctx:job", PointerError::NoScheme),
            ("://x", PointerError::NoScheme),
            ("redis://", PointerError::MissingKey),
            ("redis://a\0b", PointerError::ControlCharacter),
            ("redis://a b", PointerError::ControlCharacter),
            ("redis://user:pw@host:6379/0", PointerError::Credentials),
            ("https://user:pw@example.org/x", PointerError::Credentials),
            ("https:///x", PointerError::MissingKey),
            ("s3://bucket", PointerError::MissingKey),
            ("s3:///key", PointerError::MissingKey),
            ("file://relative/path", PointerError::RelativePath),
            ("file:///a/../etc/passwd", PointerError::RelativePath),
            ("file:///", PointerError::MissingKey),
            ("ftp://x/y", PointerError::UnsupportedScheme("ftp".into())),
            ("http://x/y", PointerError::UnsupportedScheme("http".into())),
        ];
        for (s, e) in cases {
            assert_eq!(Pointer::parse(s), Err(e), "{s:?}");
        }
        assert_eq!(
            Pointer::parse(&format!("redis://{}", "k".repeat(3000))),
            Err(PointerError::TooLong)
        );
    }

    #[test]
    fn job_pointers() {
        assert_eq!(Pointer::context("j").to_string(), "redis://ctx:j");
        assert_eq!(Pointer::result("j").to_string(), "redis://res:j");
    }
}
