//! The blocking file operations behind [`FileBlobStore`](super::FileBlobStore).

use std::fs::{self, File, Metadata};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::layout::{Layout, key_dir};
use super::meta::{Identity, Meta};
use crate::limits::ttl_millis;
use crate::{Error, Limits, Result};

/// Temporary files older than this are taken for crash leftovers by `purge_expired`.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) limits: Limits,
    durable: bool,
    /// Per-process random prefix and counter of temporary file names.
    tmp_seed: u64,
    tmp_seq: AtomicU64,
}

/// Removes a temporary file on drop unless it was renamed into place.
struct TmpFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Inner {
    pub(crate) fn new(layout: Layout, limits: Limits, durable: bool) -> Self {
        Inner {
            layout,
            limits,
            durable,
            tmp_seed: RandomState::new().hash_one(std::process::id()),
            tmp_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn io_error(&self, e: io::Error) -> Error {
        Error::Backend {
            backend: "file",
            location: self.layout.root_str.clone(),
            source: Box::new(e),
        }
    }

    /// Refuses keys whose directory is reached through a symbolic link.
    fn check_dir(&self, key: &str) -> Result<()> {
        let Some(dir) = key_dir(key) else {
            return Ok(());
        };
        let expected = self.layout.root.join(dir);
        match fs::canonicalize(&expected) {
            Ok(real) if real == expected => Ok(()),
            Ok(_) => Err(self.io_error(io::Error::other(format!(
                "refusing to follow a symbolic link in `{key}`"
            )))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The data file's metadata, `None` if there is no blob (no file, or a directory).
    /// Symbolic links are refused.
    fn stat(&self, key: &str) -> Result<Option<Metadata>> {
        self.check_dir(key)?;
        match fs::symlink_metadata(self.layout.data(key)) {
            Ok(m) if m.file_type().is_symlink() => Err(self.io_error(io::Error::other(format!(
                "refusing to follow the symbolic link `{key}`"
            )))),
            Ok(m) if m.is_file() => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn read_meta(&self, key: &str) -> Result<Option<Meta>> {
        match fs::read_to_string(self.layout.meta(key)) {
            Ok(text) => Ok(Meta::decode(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(e)),
        }
    }

    fn expired(&self, key: &str, id: &Identity) -> Result<bool> {
        Ok(self
            .read_meta(key)?
            .is_some_and(|m| m.expired(id, SystemTime::now())))
    }

    pub(crate) fn get(&self, key: &str) -> Result<Bytes> {
        // A file replaced between the symlink check and the open is looked at again.
        for _ in 0..3 {
            if let Some(bytes) = self.try_get(key)? {
                return Ok(bytes);
            }
        }
        Err(self.io_error(io::Error::other(format!(
            "`{key}` kept being replaced while it was read"
        ))))
    }

    /// The blob, or `None` if the file opened is not the one checked (replaced meanwhile,
    /// perhaps by a symbolic link, which must not be read through).
    fn try_get(&self, key: &str) -> Result<Option<Bytes>> {
        let Some(linked) = self.stat(key)? else {
            return Err(Error::not_found(key));
        };
        let file = match File::open(self.layout.data(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::not_found(key)),
            Err(e) => return Err(self.io_error(e)),
        };
        let opened = file.metadata().map_err(|e| self.io_error(e))?;
        let id = Identity::of(&opened);
        if Identity::of(&linked) != id {
            return Ok(None);
        }
        let size = usize::try_from(opened.len()).unwrap_or(usize::MAX);
        self.limits.check_size(size)?;
        if self.expired(key, &id)? {
            return Err(Error::not_found(key));
        }
        // Bounded even if someone appends to the file meanwhile.
        let bound = u64::try_from(self.limits.max_blob_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut buf = Vec::with_capacity(size);
        file.take(bound)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_error(e))?;
        self.limits.check_size(buf.len())?;
        Ok(Some(Bytes::from(buf)))
    }

    pub(crate) fn exists(&self, key: &str) -> Result<bool> {
        match self.stat(key)? {
            Some(m) => Ok(!self.expired(key, &Identity::of(&m))?),
            None => Ok(false),
        }
    }

    pub(crate) fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if let Some(dir) = key_dir(key) {
            for base in [&self.layout.root, &self.layout.meta] {
                fs::create_dir_all(base.join(dir)).map_err(|e| self.io_error(e))?;
            }
            self.check_dir(key)?;
        }
        let (mut data_tmp, mut file) = self.create_tmp()?;
        file.write_all(value).map_err(|e| self.io_error(e))?;
        if self.durable {
            file.sync_all().map_err(|e| self.io_error(e))?;
        }
        let id = Identity::of(&file.metadata().map_err(|e| self.io_error(e))?);
        drop(file);

        // Every put writes its metadata (also "never expires"), so a stale entry never
        // outlives the blob it was about.
        let meta = Meta::new(id, ttl.map(ttl_millis), SystemTime::now());
        let (mut meta_tmp, mut mf) = self.create_tmp()?;
        mf.write_all(meta.encode().as_bytes())
            .map_err(|e| self.io_error(e))?;
        if self.durable {
            mf.sync_all().map_err(|e| self.io_error(e))?;
        }
        drop(mf);
        let meta_path = self.layout.meta(key);
        fs::rename(&meta_tmp.path, &meta_path).map_err(|e| self.io_error(e))?;
        meta_tmp.armed = false;

        let data_path = self.layout.data(key);
        fs::rename(&data_tmp.path, &data_path).map_err(|e| self.io_error(e))?;
        data_tmp.armed = false;

        if self.durable {
            for path in [&data_path, &meta_path] {
                if let Some(dir) = path.parent() {
                    sync_dir(dir).map_err(|e| self.io_error(e))?;
                }
            }
        }
        Ok(())
    }

    /// [`put`](Self::put), only if no live blob is there: the data file is hard-linked
    /// into place (which fails if a file is there), then its metadata written. An expired
    /// blob in the way is removed first. A crash between the link and the metadata leaves
    /// a blob that never expires.
    pub(crate) fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        if let Some(dir) = key_dir(key) {
            for base in [&self.layout.root, &self.layout.meta] {
                fs::create_dir_all(base.join(dir)).map_err(|e| self.io_error(e))?;
            }
            self.check_dir(key)?;
        }
        let (data_tmp, mut file) = self.create_tmp()?;
        file.write_all(value).map_err(|e| self.io_error(e))?;
        if self.durable {
            file.sync_all().map_err(|e| self.io_error(e))?;
        }
        let id = Identity::of(&file.metadata().map_err(|e| self.io_error(e))?);
        drop(file);
        let data_path = self.layout.data(key);
        // An expired blob in the way is removed and the link tried again; a few rounds
        // suffice unless other writers keep racing for the key.
        for _ in 0..3 {
            match fs::hard_link(&data_tmp.path, &data_path) {
                Ok(()) => {
                    let meta = Meta::new(id, ttl.map(ttl_millis), SystemTime::now());
                    let (mut meta_tmp, mut mf) = self.create_tmp()?;
                    mf.write_all(meta.encode().as_bytes())
                        .map_err(|e| self.io_error(e))?;
                    if self.durable {
                        mf.sync_all().map_err(|e| self.io_error(e))?;
                    }
                    drop(mf);
                    let meta_path = self.layout.meta(key);
                    fs::rename(&meta_tmp.path, &meta_path).map_err(|e| self.io_error(e))?;
                    meta_tmp.armed = false;
                    if self.durable {
                        for path in [&data_path, &meta_path] {
                            if let Some(dir) = path.parent() {
                                sync_dir(dir).map_err(|e| self.io_error(e))?;
                            }
                        }
                    }
                    // `data_tmp` removes the temporary name; the blob keeps the inode.
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let Some(m) = self.stat(key)? else { continue };
                    let there = Identity::of(&m);
                    if !self.expired(key, &there)? {
                        return Ok(false);
                    }
                    self.remove_expired(key, &there)?;
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Err(self.io_error(io::Error::other(format!(
            "`{key}` kept being replaced while it was created"
        ))))
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool> {
        let Some(m) = self.stat(key)? else {
            return Ok(false);
        };
        let id = Identity::of(&m);
        let live = !self.expired(key, &id)?;
        match fs::remove_file(self.layout.data(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(e)),
        }
        self.remove_meta_if(key, &id)?;
        Ok(live)
    }

    /// Removes the metadata of `key` if it is about the data file `id` (not a newer one).
    fn remove_meta_if(&self, key: &str, id: &Identity) -> Result<()> {
        if self.read_meta(key)?.is_some_and(|m| m.identity == *id) {
            match fs::remove_file(self.layout.meta(key)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    fn create_tmp(&self) -> Result<(TmpFile, File)> {
        loop {
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let path = self
                .layout
                .tmp
                .join(format!("{:016x}-{seq}", self.tmp_seed));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((TmpFile { path, armed: true }, f)),
                // A leftover from an earlier process with the same seed: try the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    pub(crate) fn purge_expired(&self) -> Result<usize> {
        let mut metas = Vec::new();
        collect_files(&self.layout.meta, &mut metas).map_err(|e| self.io_error(e))?;
        let now = SystemTime::now();
        let mut purged = 0;
        for meta_path in metas {
            let Some(key) = meta_path
                .strip_prefix(&self.layout.meta)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let Some(meta) = self.read_meta(&key)? else {
                continue;
            };
            match self.stat(&key) {
                Ok(None) => {
                    // Orphaned metadata (blob deleted or never renamed into place).
                    self.remove_meta_if(&key, &meta.identity)?;
                }
                Ok(Some(m)) if meta.expired(&Identity::of(&m), now) => {
                    if self.remove_expired(&key, &meta.identity)? {
                        purged += 1;
                    }
                    self.remove_meta_if(&key, &meta.identity)?;
                }
                Ok(Some(_)) | Err(_) => {}
            }
        }
        self.purge_stale_tmp(now)?;
        Ok(purged)
    }

    /// Removes the data file of `key` if it is still the expired file `id`. The file is
    /// first moved aside, so a blob written concurrently is never lost: if what was moved
    /// is not `id`, it is linked back (unless an even newer blob took its place).
    fn remove_expired(&self, key: &str, id: &Identity) -> Result<bool> {
        let (mut aside, file) = self.create_tmp()?;
        drop(file);
        match fs::rename(self.layout.data(key), &aside.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(e)),
        }
        let moved = fs::symlink_metadata(&aside.path).map_err(|e| self.io_error(e))?;
        if Identity::of(&moved) == *id {
            return Ok(true); // `aside` removes it on drop
        }
        match fs::hard_link(&aside.path, self.layout.data(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                aside.armed = false;
                return Err(self.io_error(e));
            }
        }
        Ok(false)
    }

    fn purge_stale_tmp(&self, now: SystemTime) -> Result<()> {
        let entries = fs::read_dir(&self.layout.tmp).map_err(|e| self.io_error(e))?;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
