//! Where the files go: a local folder, or an object store (S3, and any
//! other store the `object_store` crate reaches) under a prefix. Keys are
//! relative: `public.orders/_manifest.json`.
//!
//! Data files are always built locally first (in `_tmp` of a local root,
//! in the spool folder for an object store), then published: renamed into
//! place, or uploaded (in parts past [`MULTIPART_PART`]) and removed.

use std::path::{Path, PathBuf};

use super::durable::{create_dir, io_error, replace_file, sync_dir};
use crate::Result;

/// Size of the parts of a multipart upload; smaller files go in one PUT.
pub const MULTIPART_PART: usize = 8 << 20;

/// A local folder or an object store.
pub(super) enum Storage {
    Local(PathBuf),
    #[cfg(feature = "files-object-store")]
    Remote(super::remote::Remote),
}

impl Storage {
    /// Where this storage is, for messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Local(root) => root.display().to_string(),
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.describe(),
        }
    }

    /// Checks the storage can be reached (an object store's bucket exists
    /// and the credentials are accepted), creating a local root.
    pub(super) async fn check(&self) -> Result<()> {
        match self {
            Self::Local(root) => create_dir(root),
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.check().await,
        }
    }

    /// Makes the finished local file `file` the object `key`; `file` is
    /// gone afterwards.
    pub(super) async fn publish(&self, file: &Path, key: &str) -> Result<()> {
        match self {
            Self::Local(root) => {
                let target = root.join(key);
                if let Some(dir) = target.parent() {
                    create_dir(dir)?;
                }
                std::fs::rename(file, &target)
                    .map_err(|e| io_error("move the data file to", &target, e))
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.upload(file, key).await,
        }
    }

    /// After [`publish`](Self::publish)ing files into `folder`: makes the
    /// moves durable (local folders; an upload is durable once done).
    pub(super) fn sync_folder(&self, folder: &str) -> Result<()> {
        match self {
            Self::Local(root) => sync_dir(&root.join(folder)),
            #[cfg(feature = "files-object-store")]
            Self::Remote(_) => Ok(()),
        }
    }

    /// Replaces the object `key` with `bytes`, atomically.
    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            Self::Local(root) => {
                let target = root.join(key);
                if let Some(dir) = target.parent() {
                    create_dir(dir)?;
                }
                replace_file(&target, &bytes)
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.put(key, bytes).await,
        }
    }

    /// The object `key`, if it exists.
    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_error("read", &path, e)),
                }
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.get(key).await,
        }
    }

    /// The folders at the top level.
    pub(super) async fn folders(&self) -> Result<Vec<String>> {
        match self {
            Self::Local(root) => {
                let mut folders = Vec::new();
                let entries = match std::fs::read_dir(root) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(folders),
                    Err(e) => return Err(io_error("list", root, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_error("list", root, e))?;
                    if entry.path().is_dir() {
                        if let Some(name) = entry.file_name().to_str() {
                            folders.push(name.to_owned());
                        }
                    }
                }
                folders.sort();
                Ok(folders)
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.folders().await,
        }
    }

    /// The names of the objects in `folder`.
    pub(super) async fn files(&self, folder: &str) -> Result<Vec<String>> {
        match self {
            Self::Local(root) => {
                let dir = root.join(folder);
                let mut files = Vec::new();
                let entries = std::fs::read_dir(&dir).map_err(|e| io_error("list", &dir, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| io_error("list", &dir, e))?;
                    if let Some(name) = entry.file_name().to_str() {
                        files.push(name.to_owned());
                    }
                }
                Ok(files)
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.files(folder).await,
        }
    }

    /// Removes the object `key` (nothing when it does not exist).
    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Self::Local(root) => {
                let path = root.join(key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_error("remove", &path, e)),
                }
            }
            #[cfg(feature = "files-object-store")]
            Self::Remote(remote) => remote.delete(key).await,
        }
    }
}
