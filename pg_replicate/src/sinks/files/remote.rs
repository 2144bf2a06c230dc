//! Files in an object store through the `object_store` crate: S3 (built
//! in, [`S3Settings`]) or any store the application builds (GCS, Azure,
//! …) as an [`ObjectStoreLocation`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use super::durable::io_error;
use super::storage::MULTIPART_PART;
use crate::{Error, ErrorKind, Result};

/// A place in an object store: the store and the prefix the sink owns.
#[derive(Clone)]
pub struct ObjectStoreLocation {
    /// The store (for example an `object_store::aws::AmazonS3`).
    pub store: Arc<dyn ObjectStore>,
    /// The prefix under which the sink writes, without a trailing `/`
    /// (`""` for the whole bucket).
    pub prefix: String,
    /// How messages name the location, for example `s3://bucket/prefix`.
    pub name: String,
}

impl fmt::Debug for ObjectStoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreLocation")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ObjectStoreLocation {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store) && self.prefix == other.prefix
    }
}

impl Eq for ObjectStoreLocation {}

/// An S3 bucket (AWS or any S3-compatible server) and prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket; it must exist.
    pub bucket: String,
    /// The prefix under which the sink writes (`""` for the whole bucket).
    pub prefix: String,
    /// The bucket's region, for example `eu-west-1`.
    pub region: String,
    /// Another endpoint than AWS, for example `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    /// Leaves out the secret key and the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// The location these settings describe.
    pub fn location(&self) -> Result<ObjectStoreLocation> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key);
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("the S3 settings of bucket {} are not valid", self.bucket),
                e,
            )
        })?;
        let prefix = self.prefix.trim_matches('/').to_owned();
        Ok(ObjectStoreLocation {
            store: Arc::new(store),
            name: format!("s3://{}/{prefix}", self.bucket),
            prefix,
        })
    }
}

/// The sink's side of an object store.
pub(super) struct Remote {
    location: ObjectStoreLocation,
}

impl Remote {
    pub(super) fn new(location: ObjectStoreLocation) -> Self {
        Self { location }
    }

    pub(super) fn describe(&self) -> String {
        self.location.name.clone()
    }

    fn key(&self, relative: &str) -> Result<Key> {
        let full = if self.location.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.location.prefix)
        };
        Key::parse(&full).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "{full:?} is not a valid object key in {}",
                    self.location.name
                ),
                e,
            )
        })
    }

    /// Lists the prefix once: a missing bucket or refused credentials fail
    /// here, before any data moves.
    pub(super) async fn check(&self) -> Result<()> {
        let prefix = self.prefix_key()?;
        self.location
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| self.error("list", &self.location.prefix, e, true))
    }

    fn prefix_key(&self) -> Result<Option<Key>> {
        if self.location.prefix.is_empty() {
            Ok(None)
        } else {
            Key::parse(&self.location.prefix).map(Some).map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!(
                        "the prefix of {} is not a valid object key",
                        self.location.name
                    ),
                    e,
                )
            })
        }
    }

    /// Uploads `file` as `key` (in parts when large, reading one part at a
    /// time), then removes it.
    pub(super) async fn upload(&self, file: &Path, key: &str) -> Result<()> {
        use tokio::io::AsyncReadExt;

        let target = self.key(key)?;
        let mut local = tokio::fs::File::open(file)
            .await
            .map_err(|e| io_error("open the data file", file, e))?;
        let size = local
            .metadata()
            .await
            .map_err(|e| io_error("read the size of the data file", file, e))?
            .len();
        if size <= MULTIPART_PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            local
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| io_error("read the data file", file, e))?;
            self.location
                .store
                .put(&target, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error("upload", key, e, false))?;
        } else {
            let upload = self
                .location
                .store
                .put_multipart(&target)
                .await
                .map_err(|e| self.error("start the upload of", key, e, false))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
            let mut part = vec![0; MULTIPART_PART];
            loop {
                let read = read_full(&mut local, &mut part)
                    .await
                    .map_err(|e| io_error("read the data file", file, e))?;
                if read == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.error("upload a part of", key, e, false))?;
                writer.write(&part[..read]);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.error("finish the upload of", key, e, false))?;
        }
        drop(local);
        tokio::fs::remove_file(file)
            .await
            .map_err(|e| io_error("remove the uploaded data file", file, e))
    }

    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.location
            .store
            .put(&self.key(key)?, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error("write", key, e, false))
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.location.store.get(&self.key(key)?).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.error("read", key, e, false)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("read", key, e, false)),
        }
    }

    pub(super) async fn folders(&self) -> Result<Vec<String>> {
        let listed = self
            .location
            .store
            .list_with_delimiter(self.prefix_key()?.as_ref())
            .await
            .map_err(|e| self.error("list", &self.location.prefix, e, true))?;
        let mut folders: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        folders.sort();
        Ok(folders)
    }

    pub(super) async fn files(&self, folder: &str) -> Result<Vec<String>> {
        let prefix = self.key(folder)?;
        let objects: Vec<_> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error("list", folder, e, false))?;
        Ok(objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        match self.location.store.delete(&self.key(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("remove", key, e, false)),
        }
    }

    fn error(&self, what: &str, key: &str, error: object_store::Error, listing: bool) -> Error {
        store_error(&self.location.name, what, key, error, listing)
    }
}

/// Reads until `buffer` is full or the file ends; the bytes read.
async fn read_full(file: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;

    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// An object store failure doing `what` on `key`, with the fix: refused
/// credentials and a missing bucket are not retried, other failures are.
/// `listing` says the request listed a prefix, where "not found" means the
/// bucket is missing.
pub(super) fn store_error(
    location: &str,
    what: &str,
    key: &str,
    error: object_store::Error,
    listing: bool,
) -> Error {
    // S3's list requests report most failures as a generic error that
    // carries the status and S3's error code.
    let text = error.to_string();
    let code = |c: &str| text.contains(c);
    let refused = code("InvalidAccessKeyId") || code("SignatureDoesNotMatch");
    let denied = code("AccessDenied") || code("403 Forbidden");
    let (kind, fix) = match &error {
        _ if refused => (
            ErrorKind::Authentication,
            "the store refused the credentials: check the access key and secret",
        ),
        _ if denied => (
            ErrorKind::Authentication,
            "the credentials lack a permission: the sink needs to list, read, write and delete \
             objects under its prefix",
        ),
        _ if code("NoSuchBucket") => (
            ErrorKind::Config,
            "the bucket does not exist: create it or fix its name",
        ),
        object_store::Error::Unauthenticated { .. } => (
            ErrorKind::Authentication,
            "the store refused the credentials: check the access key and secret",
        ),
        object_store::Error::PermissionDenied { .. } => (
            ErrorKind::Authentication,
            "the credentials lack a permission: the sink needs to list, read, write and delete \
             objects under its prefix",
        ),
        object_store::Error::NotFound { .. } if listing => (
            ErrorKind::Config,
            "the bucket does not exist: create it or fix its name",
        ),
        _ => (ErrorKind::Sink, "the request failed; it is retried"),
    };
    let object = if key.is_empty() {
        "the bucket".to_owned()
    } else {
        key.to_owned()
    };
    Error::with_source(
        kind,
        format!("could not {what} {object} in {location}: {fix}"),
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause() -> Box<dyn std::error::Error + Send + Sync> {
        "status 403".into()
    }

    #[test]
    fn refused_credentials_and_missing_buckets_are_not_retried() {
        let refused = store_error(
            "s3://b/p",
            "list",
            "p",
            object_store::Error::Unauthenticated {
                path: "p".into(),
                source: cause(),
            },
            true,
        );
        assert_eq!(refused.kind(), ErrorKind::Authentication);
        assert!(!refused.is_retryable());
        assert!(
            refused.to_string().contains("check the access key"),
            "{refused}"
        );

        let denied = store_error(
            "s3://b/p",
            "write",
            "p/t/_manifest.json",
            object_store::Error::PermissionDenied {
                path: "p".into(),
                source: cause(),
            },
            false,
        );
        assert_eq!(denied.kind(), ErrorKind::Authentication);
        assert!(
            denied.to_string().contains("list, read, write and delete"),
            "{denied}"
        );

        let missing = store_error(
            "s3://nope/p",
            "list",
            "p",
            object_store::Error::NotFound {
                path: "p".into(),
                source: cause(),
            },
            true,
        );
        assert_eq!(missing.kind(), ErrorKind::Config);
        assert!(missing.to_string().contains("s3://nope/p"), "{missing}");
        assert!(
            missing.to_string().contains("bucket does not exist"),
            "{missing}"
        );

        // The forms S3 list requests fail with.
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        let cases = [
            (
                "404 Not Found: <Error><Code>NoSuchBucket</Code>",
                ErrorKind::Config,
            ),
            (
                "403 Forbidden: <Code>InvalidAccessKeyId</Code>",
                ErrorKind::Authentication,
            ),
            (
                "403 Forbidden: <Code>SignatureDoesNotMatch</Code>",
                ErrorKind::Authentication,
            ),
            (
                "403 Forbidden: <Code>AccessDenied</Code>",
                ErrorKind::Authentication,
            ),
        ];
        for (text, kind) in cases {
            let error = store_error("s3://b/p", "list", "p", generic(text), true);
            assert_eq!(error.kind(), kind, "{text}");
        }

        let passing = store_error(
            "s3://b/p",
            "upload",
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: cause(),
            },
            false,
        );
        assert!(passing.is_retryable());
    }

    #[test]
    fn settings_debug_hides_the_secret() {
        let settings = S3Settings {
            bucket: "b".into(),
            prefix: "p".into(),
            region: "us-east-1".into(),
            endpoint: None,
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("token-secret"),
            "{shown}"
        );
    }
}
