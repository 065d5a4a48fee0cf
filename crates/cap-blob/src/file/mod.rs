//! The file-system backend: blobs as plain files under one root directory, for
//! single-machine durable use.
//!
//! - Writes are atomic: the bytes go to a temporary file in the root (same file system),
//!   are synced, then renamed over the target, so a reader sees the old blob or the new
//!   one, whole, never a torn write, also after a crash.
//! - TTLs live in per-blob metadata files that name the exact data file they apply to
//!   (see `meta.rs`); expired blobs read as missing at once, and
//!   [`FileBlobStore::purge_expired`] reclaims their space.
//! - Pointers are `file://<root>/<key>`; a pointer outside the root, a key with `..` or
//!   `.`-segments, and symbolic links inside the root are refused: nothing outside the
//!   root can be read or written through the store.
//!
//! ```
//! use bytes::Bytes;
//! use cap_blob::{BlobStore, FileBlobStore, StoreInfo};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("cap-blob-doc-{}", std::process::id()));
//! let store = FileBlobStore::open(&dir).unwrap();
//! let ptr = store.put_result("job-1", Bytes::from_static(b"{}")).await.unwrap();
//! assert!(ptr.to_string().starts_with("file:///"));
//! assert_eq!(store.get_ptr(&ptr).await.unwrap(), "{}");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

mod layout;
mod meta;
mod ops;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_proto::Pointer;

use crate::{BlobStore, Error, Limits, Result, StoreInfo};
use layout::{Layout, check_key};
use ops::Inner;

/// A blob store in a directory. Cheap to clone; clones share the directory and settings.
/// Unix only.
#[derive(Clone, Debug)]
pub struct FileBlobStore {
    inner: Arc<Inner>,
}

/// Options for [`FileBlobStore`]; start from [`FileBlobStore::builder`].
#[derive(Clone, Debug)]
pub struct FileStoreBuilder {
    root: PathBuf,
    limits: Limits,
    durable: bool,
}

impl FileStoreBuilder {
    /// The size limit and default TTLs (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether to `fsync` files and directories so a completed put survives a crash or power
    /// loss (default `true`). Without it, writes are still atomic but may be lost on crash.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Creates the root (and the store's internal directory in it) if missing, and opens
    /// the store. Fails with [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig)
    /// if the root cannot be created or cannot be named in a pointer.
    pub fn open(self) -> Result<FileBlobStore> {
        let FileStoreBuilder {
            root,
            limits,
            durable,
        } = self;
        let shown = root.display().to_string();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::config_with(format!("cannot create file store root {shown}"), e))?;
        let root = std::fs::canonicalize(&root).map_err(|e| {
            Error::config_with(format!("cannot resolve file store root {shown}"), e)
        })?;
        let layout = Layout::new(root)?;
        for dir in [&layout.tmp, &layout.meta] {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::config_with(
                    format!("cannot create {} in the file store root", dir.display()),
                    e,
                )
            })?;
        }
        Ok(FileBlobStore {
            inner: Arc::new(Inner::new(layout, limits, durable)),
        })
    }
}

impl FileBlobStore {
    /// Opens (creating if needed) a store in `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::builder(root).open()
    }

    /// Options for a store in `root`.
    pub fn builder(root: impl AsRef<Path>) -> FileStoreBuilder {
        FileStoreBuilder {
            root: root.as_ref().to_owned(),
            limits: Limits::default(),
            durable: true,
        }
    }

    /// The store's root directory (canonical, absolute).
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// Deletes expired blobs and their metadata, and temporary files left by a crash more
    /// than an hour ago. Returns the number of blobs deleted.
    pub async fn purge_expired(&self) -> Result<usize> {
        self.run(|inner| inner.purge_expired()).await
    }

    /// Runs blocking file IO off the async threads (inline outside a tokio runtime).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let task = handle.spawn_blocking(move || f(&inner));
                match task.await {
                    Ok(result) => result,
                    Err(join) => Err(self.inner.io_error(std::io::Error::other(join.to_string()))),
                }
            }
            Err(_) => f(&inner),
        }
    }
}

impl StoreInfo for FileBlobStore {
    fn scheme(&self) -> &'static str {
        "file"
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn pointer_for(&self, key: &str) -> Result<Pointer> {
        check_key(key)?;
        let text = format!("file://{}/{key}", self.inner.layout.root_str);
        Pointer::parse(&text).map_err(|_| Error::InvalidKey {
            reason: "key does not fit in a file:// pointer under this root",
        })
    }

    fn key_for<'p>(&self, pointer: &'p Pointer) -> Result<&'p str> {
        let Pointer::File { path } = pointer else {
            return Err(Error::invalid_pointer(format!(
                "the file store serves file:// pointers, not {}://",
                pointer.scheme()
            )));
        };
        let key = self.inner.layout.key_of(path).ok_or_else(|| {
            Error::invalid_pointer(format!(
                "file pointer is outside the store root {}",
                self.inner.layout.root_str
            ))
        })?;
        check_key(key)
            .map_err(|e| Error::invalid_pointer(format!("file pointer names no blob: {e}")))?;
        Ok(key)
    }
}

impl BlobStore for FileBlobStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes>> + Send {
        let checked = check_key(key).map(|()| key.to_owned());
        async move {
            let key = checked?;
            self.run(move |inner| inner.get(&key)).await
        }
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        let checked = check_key(key)
            .and_then(|()| self.inner.limits.check_size(value.len()))
            .map(|()| key.to_owned());
        async move {
            let key = checked?;
            self.run(move |inner| inner.put(&key, &value, ttl)).await
        }
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        let checked = check_key(key).map(|()| key.to_owned());
        async move {
            let key = checked?;
            self.run(move |inner| inner.delete(&key)).await
        }
    }

    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        let checked = check_key(key).map(|()| key.to_owned());
        async move {
            let key = checked?;
            self.run(move |inner| inner.exists(&key)).await
        }
    }

    fn put_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send {
        let checked = check_key(key)
            .and_then(|()| self.inner.limits.check_size(value.len()))
            .map(|()| key.to_owned());
        async move {
            let key = checked?;
            self.run(move |inner| inner.put_if_absent(&key, &value, ttl))
                .await
        }
    }
}
