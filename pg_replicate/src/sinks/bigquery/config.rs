//! [`BigQuerySinkConfig`]: which dataset the sink writes, how it
//! authenticates, and how it moves rows.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// Google's REST endpoint, the default of [`BigQuerySinkConfig::endpoint`].
pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";
/// Google's Storage Write API endpoint, the default of
/// [`BigQuerySinkConfig::storage_endpoint`].
pub const DEFAULT_STORAGE_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";

/// How the sink proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum BigQueryCredentials {
    /// A service account key file (JSON, as the Cloud console downloads it).
    /// The sink exchanges it for OAuth tokens at the key's `token_uri`.
    ServiceAccountKeyFile(PathBuf),
    /// The content of a service account key file.
    ServiceAccountKey(String),
    /// No credentials: requests carry no token. Only for emulators (for
    /// example `local-bigquery`), which check none.
    None,
}

impl fmt::Debug for BigQueryCredentials {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAccountKeyFile(path) => {
                f.debug_tuple("ServiceAccountKeyFile").field(path).finish()
            }
            Self::ServiceAccountKey(_) => f.write_str("ServiceAccountKey(<redacted>)"),
            Self::None => f.write_str("None"),
        }
    }
}

/// How a table's backfill reaches BigQuery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackfillMethod {
    /// One load job per table: the rows are streamed as Parquet through a
    /// resumable upload, and BigQuery loads the file when the copy ends.
    /// Free of ingestion charges on BigQuery. The default.
    #[default]
    LoadJob,
    /// The Storage Write API: rows appended to a pending stream that is
    /// committed when the copy ends (all or nothing).
    StorageWrite,
}

/// How a CDC batch's changes reach the staging tables before they are
/// applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StagingMethod {
    /// The Storage Write API's default stream. The default: no quota on
    /// the number of batches, and rows written this way can be deleted by
    /// DML at once.
    #[default]
    StorageWrite,
    /// A load job per table and batch. BigQuery allows 1,500 load jobs per
    /// table and day, so only for batches a minute or more apart.
    LoadJob,
}

/// Retries of requests that fail for a reason that may pass (connection
/// errors, HTTP 5xx and 429, rate limits, aborted transactions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after every further failure.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about two minutes.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), with up to 25%
    /// jitter taken from `jitter` (a value in `0..1`).
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        base.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// Configuration of a [`BigQuerySink`](super::BigQuerySink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigQuerySinkConfig {
    /// The Google Cloud project that owns the dataset and runs the jobs.
    pub project_id: String,
    /// The dataset the replicated tables live in; it must exist.
    pub dataset_id: String,
    /// How the sink authenticates.
    pub credentials: BigQueryCredentials,
    /// Base URL of the REST API, without `/bigquery/v2`: Google's by
    /// default, an emulator's (`http://127.0.0.1:9050`) or a private
    /// endpoint otherwise. Uploads go to `<endpoint>/upload/bigquery/v2`.
    pub endpoint: String,
    /// URL of the Storage Write API (gRPC): TLS to Google by default;
    /// `http://host:port` for a plaintext endpoint such as an emulator's.
    pub storage_endpoint: String,
    /// Who writes this dataset, for example `"publication/slot"`: the
    /// sink's state rows are kept under it, so several pipelines can share
    /// a dataset (with different tables). `None` is the empty identity.
    pub identity: Option<String>,
    /// How backfills are loaded.
    pub backfill: BackfillMethod,
    /// How CDC batches are staged.
    pub staging: StagingMethod,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Largest Storage Write request, in bytes of encoded rows (BigQuery
    /// refuses requests over 10 MB).
    pub max_append_bytes: usize,
    /// Rows per Parquet row group of a load job (bounds the memory of a
    /// backfill).
    pub load_row_group_rows: usize,
}

impl BigQuerySinkConfig {
    /// A sink writing `dataset_id` of `project_id` on Google's endpoints
    /// with `credentials`, the other settings at their defaults.
    pub fn new(
        project_id: impl Into<String>,
        dataset_id: impl Into<String>,
        credentials: BigQueryCredentials,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            dataset_id: dataset_id.into(),
            credentials,
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            storage_endpoint: DEFAULT_STORAGE_ENDPOINT.to_owned(),
            identity: None,
            backfill: BackfillMethod::default(),
            staging: StagingMethod::default(),
            retry: RetryPolicy::default(),
            max_append_bytes: 8 * 1024 * 1024,
            load_row_group_rows: 64 * 1024,
        }
    }

    /// Sets the REST endpoint and the Storage Write endpoint (for example
    /// an emulator's two ports).
    pub fn with_endpoints(
        mut self,
        endpoint: impl Into<String>,
        storage_endpoint: impl Into<String>,
    ) -> Self {
        self.endpoint = endpoint.into();
        self.storage_endpoint = storage_endpoint.into();
        self
    }

    /// Sets the identity the state rows are kept under.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Sets the backfill method.
    pub fn with_backfill(mut self, method: BackfillMethod) -> Self {
        self.backfill = method;
        self
    }

    /// Sets the staging method.
    pub fn with_staging(mut self, method: StagingMethod) -> Self {
        self.staging = method;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Checks the configuration before anything is sent.
    pub fn validate(&self) -> Result<()> {
        let config = |message: String| Err(Error::new(ErrorKind::Config, message));
        if !valid_project_id(&self.project_id) {
            return config(format!(
                "BigQuery project id {:?} is not valid: give the project's id (lower-case letters, digits \
                 and hyphens, optionally prefixed by a domain and ':'), not its display name",
                self.project_id
            ));
        }
        if !valid_dataset_id(&self.dataset_id) {
            return config(format!(
                "BigQuery dataset id {:?} is not valid: a dataset id has at most 1,024 letters, digits and \
                 underscores",
                self.dataset_id
            ));
        }
        for (what, url) in [
            ("endpoint", &self.endpoint),
            ("storage endpoint", &self.storage_endpoint),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return config(format!(
                    "the BigQuery {what} {url:?} is not an http:// or https:// URL"
                ));
            }
        }
        if self.retry.max_attempts == 0 {
            return config("the retry policy needs at least one attempt".to_owned());
        }
        if self.max_append_bytes == 0 || self.max_append_bytes > 10_000_000 {
            return config(format!(
                "max_append_bytes {} is outside 1..=10000000 (BigQuery refuses larger requests)",
                self.max_append_bytes
            ));
        }
        if self.load_row_group_rows == 0 {
            return config("load_row_group_rows must be positive".to_owned());
        }
        Ok(())
    }

    /// The identity the state rows are kept under (empty when none).
    pub fn identity_key(&self) -> &str {
        self.identity.as_deref().unwrap_or("")
    }
}

fn valid_project_id(id: &str) -> bool {
    let name = id.rsplit_once(':').map_or(id, |(_, name)| name);
    !name.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
}

fn valid_dataset_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 1024 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BigQuerySinkConfig {
        BigQuerySinkConfig::new("my-project", "replica", BigQueryCredentials::None)
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(config().validate().is_ok());
        let error = BigQuerySinkConfig {
            project_id: "My Project".into(),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.message().contains("project id"), "{error}");
        let error = BigQuerySinkConfig {
            dataset_id: "my-dataset".into(),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert!(error.message().contains("dataset id"), "{error}");
        let error = config()
            .with_endpoints("localhost:9050", "http://localhost:9060")
            .validate()
            .unwrap_err();
        assert!(error.message().contains("endpoint"), "{error}");
    }

    #[test]
    fn credentials_never_print_key_material() {
        let key = BigQueryCredentials::ServiceAccountKey("-----BEGIN PRIVATE KEY-----".into());
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn backoff_doubles_up_to_the_limit_with_bounded_jitter() {
        let retry = RetryPolicy::default();
        assert_eq!(retry.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(retry.backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(retry.backoff(30, 0.0), Duration::from_secs(30));
        assert_eq!(retry.backoff(1, 1.0), Duration::from_millis(375));
    }
}
