//! Where the file backend keeps things, and the key rules that keep it inside its root.
//!
//! ```text
//! <root>/<key>                    the blob, a plain file holding exactly the bytes put
//! <root>/.cap-blob/meta/<key>     its expiry metadata
//! <root>/.cap-blob/tmp/           temporary files, renamed into place
//! ```
//! Keys may contain `/` (nested directories) but no empty, `.`-prefixed (so no `.`, `..`
//! or `.cap-blob`) or over-long segments, so a key always names a path strictly inside
//! the root that cannot collide with the store's own files.

use std::path::{Path, PathBuf};

use crate::{Error, Result, key};

/// Directory (inside the root) holding the store's own files.
pub(crate) const INTERNAL_DIR: &str = ".cap-blob";

/// Longest path segment: `NAME_MAX` on Linux.
const MAX_SEGMENT_LEN: usize = 255;

/// Checks a file-store key: [`key::check`] plus the path rules above.
pub(crate) fn check_key(key: &str) -> Result<()> {
    key::check(key)?;
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(Error::InvalidKey {
                reason: "file key has an empty path segment (leading, trailing or double `/`)",
            });
        }
        if segment.starts_with('.') {
            return Err(Error::InvalidKey {
                reason: "file key has a path segment starting with `.`",
            });
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(Error::InvalidKey {
                reason: "file key has a path segment longer than 255 bytes",
            });
        }
    }
    Ok(())
}

/// The paths of one store.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    /// The root as UTF-8, for pointers.
    pub(crate) root_str: String,
    pub(crate) tmp: PathBuf,
    pub(crate) meta: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Result<Self> {
        let root_str = root
            .to_str()
            .ok_or_else(|| Error::config("file store root is not valid UTF-8"))?
            .to_owned();
        if root_str
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::config(
                "file store root contains whitespace or control characters, which pointers cannot carry",
            ));
        }
        let internal = root.join(INTERNAL_DIR);
        Ok(Layout {
            tmp: internal.join("tmp"),
            meta: internal.join("meta"),
            root,
            root_str,
        })
    }

    /// The data file of a (checked) key.
    pub(crate) fn data(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The metadata file of a (checked) key.
    pub(crate) fn meta(&self, key: &str) -> PathBuf {
        self.meta.join(key)
    }

    /// The key of an absolute path under the root, if it is one.
    pub(crate) fn key_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.strip_prefix(self.root_str.as_str())?
            .strip_prefix('/')
            .filter(|k| !k.is_empty())
    }
}

/// The directory a (checked) key's file lives in, relative to the root, if nested.
pub(crate) fn key_dir(key: &str) -> Option<&Path> {
    Path::new(key)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for ok in ["ctx:job-1", "a/b/c", "res:x.json", "a/b.c"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "..",
            "a/../b",
            ".",
            "./a",
            ".cap-blob/meta/x",
            "a/.hidden",
            "a b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"s".repeat(256)).is_err());
        assert!(check_key(&"s".repeat(255)).is_ok());
    }

    #[test]
    fn keys_of_paths() {
        let l = Layout::new(PathBuf::from("/srv/blobs")).unwrap();
        assert_eq!(l.key_of("/srv/blobs/ctx:1"), Some("ctx:1"));
        assert_eq!(l.key_of("/srv/blobs/a/b"), Some("a/b"));
        assert_eq!(l.key_of("/srv/blobs"), None);
        assert_eq!(l.key_of("/srv/blobs/"), None);
        assert_eq!(l.key_of("/srv/blobsother/x"), None);
        assert_eq!(l.key_of("/etc/passwd"), None);
        assert_eq!(key_dir("a/b/c"), Some(Path::new("a/b")));
        assert_eq!(key_dir("c"), None);
        assert!(Layout::new(PathBuf::from("/has space")).is_err());
    }
}
