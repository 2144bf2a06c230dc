//! The REST side of the BigQuery sink: queries and scripts, table
//! metadata, load jobs over resumable or multipart uploads; every call
//! retried with backoff while its failure may pass, and every failure
//! turned into an [`Error`] that names the cause and the fix.
//!
//! Queries go through `gcp-bigquery-client` (its base URL set to the
//! configured endpoint); table metadata and uploads, whose responses that
//! crate does not model fully, through the same `reqwest` client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_row::TableRow;
use serde_json::{json, Value};
use tracing::debug;

use super::auth::authenticator;
use super::config::{BigQuerySinkConfig, RetryPolicy};
use super::errors::{from_bq_error, from_http, from_reqwest, random_id, Failure};
use super::retry::with_retry;
use crate::{Error, ErrorKind, Result};

/// How long one `jobs.query` call waits for its job before polling.
const QUERY_WAIT_MS: i32 = 60_000;
/// Upload chunks are multiples of 256 KiB (the resumable protocol's unit).
pub const UPLOAD_CHUNK: usize = 32 * 256 * 1024;

/// A column of an existing table, as `tables.get` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingColumn {
    /// Column name.
    pub name: String,
    /// Type name (`INT64`, `INTEGER`, `NUMERIC`, ...).
    pub type_name: String,
    /// Decimal precision, when parameterized.
    pub precision: Option<u8>,
    /// Decimal scale, when parameterized.
    pub scale: Option<u8>,
}

/// The rows of a query result, every cell as BigQuery's REST text (NULL
/// as `None`).
pub type Rows = Vec<Vec<Option<String>>>;

/// A resumable upload of a load job in progress.
pub struct ResumableUpload {
    url: String,
    /// Bytes the server has acknowledged.
    sent: u64,
    table: String,
}

/// The REST client of one dataset.
pub struct BigQueryClient {
    rest: gcp_bigquery_client::Client,
    http: reqwest::Client,
    auth: Arc<dyn Authenticator>,
    project: String,
    dataset: String,
    location: Option<String>,
    v2_url: String,
    upload_url: String,
    retry: RetryPolicy,
}

impl BigQueryClient {
    /// Builds the clients and checks that the dataset exists (learning its
    /// location, which every job must name).
    pub async fn connect(config: &BigQuerySinkConfig) -> Result<Self> {
        config.validate()?;
        let auth = authenticator(&config.credentials).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| {
                Error::with_source(ErrorKind::Config, "cannot build the HTTP client", e)
            })?;
        let base = config.endpoint.trim_end_matches('/');
        let v2_url = format!("{base}/bigquery/v2");
        let rest = ClientBuilder::new()
            .with_v2_base_url(v2_url.clone())
            .with_client(http.clone())
            .build_from_authenticator(auth.clone())
            .await
            .map_err(|e| {
                Error::with_source(ErrorKind::Config, "cannot build the BigQuery client", e)
            })?;
        let mut client = Self {
            rest,
            http,
            auth,
            project: config.project_id.clone(),
            dataset: config.dataset_id.clone(),
            location: None,
            v2_url,
            upload_url: format!("{base}/upload/bigquery/v2"),
            retry: config.retry.clone(),
        };
        client.location = client.dataset_location().await?;
        Ok(client)
    }

    /// The authenticator (shared with the Storage Write client).
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.auth.clone()
    }

    async fn dataset_location(&self) -> Result<Option<String>> {
        let what = format!("read dataset {}:{}", self.project, self.dataset);
        let dataset = self
            .with_retry(&what, || async {
                self.rest
                    .dataset()
                    .get(&self.project, &self.dataset)
                    .await
                    .map_err(|e| from_bq_error(&what, e))
            })
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::Config => Error::new(
                    ErrorKind::Config,
                    format!(
                        "BigQuery dataset {}:{} does not exist; create it (bq mk --dataset {}:{}) or name \
                         an existing one",
                        self.project, self.dataset, self.project, self.dataset
                    ),
                ),
                _ => error,
            })?;
        Ok(dataset.location)
    }

    /// Runs `f` under the retry policy (see [`with_retry`]).
    pub async fn with_retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        with_retry(&self.retry, what, f).await
    }

    /// Runs a query or script and returns its rows (the first page: the
    /// sink's own queries return a handful). The same request id is sent
    /// on every retry, so BigQuery runs it once.
    pub async fn query(&self, sql: &str, what: &str) -> Result<Rows> {
        let request_id = random_id();
        let started = Instant::now();
        let rows = self
            .with_retry(what, || async {
                let mut request = QueryRequest::new(sql);
                request.request_id = Some(request_id.clone());
                request.timeout_ms = Some(QUERY_WAIT_MS);
                request.location = self.location.clone();
                let response = self
                    .rest
                    .job()
                    .query(&self.project, request)
                    .await
                    .map_err(|e| from_bq_error(what, e))?;
                if response.job_complete == Some(true) {
                    return Ok(cells(response.rows.unwrap_or_default()));
                }
                let job = response
                    .job_reference
                    .and_then(|r| r.job_id)
                    .ok_or_else(|| {
                        Failure::Permanent(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "BigQuery answered a query to {what} with neither rows nor a job"
                            ),
                        ))
                    })?;
                self.wait_for_query(&job, what).await
            })
            .await?;
        debug!(
            what,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "BigQuery query done"
        );
        Ok(rows)
    }

    async fn wait_for_query(&self, job: &str, what: &str) -> std::result::Result<Rows, Failure> {
        loop {
            let parameters = GetQueryResultsParameters {
                location: self.location.clone(),
                timeout_ms: Some(QUERY_WAIT_MS),
                ..GetQueryResultsParameters::default()
            };
            let response = self
                .rest
                .job()
                .get_query_results(&self.project, job, parameters)
                .await
                .map_err(|e| from_bq_error(what, e))?;
            if response.job_complete == Some(true) {
                return Ok(cells(response.rows.unwrap_or_default()));
            }
        }
    }

    /// The columns of `table`, or `None` when it does not exist.
    pub async fn table_columns(&self, table: &str) -> Result<Option<Vec<ExistingColumn>>> {
        let url = format!(
            "{}/projects/{}/datasets/{}/tables/{}",
            self.v2_url,
            encode(&self.project),
            encode(&self.dataset),
            encode(table)
        );
        let what = format!("read the schema of table {table}");
        let body = self
            .with_retry(&what, || async {
                let response = self
                    .authorized(self.http.get(&url))
                    .await?
                    .send()
                    .await
                    .map_err(|e| from_reqwest(&what, e))?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                json_body(response, &what).await.map(Some)
            })
            .await?;
        Ok(body.map(|body| parse_columns(&body)))
    }

    /// Adds the bearer token to a request (none for emulators).
    pub async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> std::result::Result<reqwest::RequestBuilder, Failure> {
        let token = self
            .auth
            .access_token()
            .await
            .map_err(|e| from_bq_error("get an access token", e))?;
        Ok(if token.is_empty() {
            request
        } else {
            request.bearer_auth(token)
        })
    }

    fn load_job(&self, table: &str, job_id: &str) -> Value {
        let mut reference = json!({ "projectId": self.project, "jobId": job_id });
        if let Some(location) = &self.location {
            reference["location"] = json!(location);
        }
        json!({
            "jobReference": reference,
            "configuration": { "load": {
                "destinationTable": {
                    "projectId": self.project, "datasetId": self.dataset, "tableId": table,
                },
                "sourceFormat": "PARQUET",
                "writeDisposition": "WRITE_APPEND",
                "createDisposition": "CREATE_NEVER",
                "decimalTargetTypes": ["NUMERIC", "BIGNUMERIC"],
            }},
        })
    }

    fn jobs_upload_url(&self, kind: &str) -> String {
        format!(
            "{}/projects/{}/jobs?uploadType={kind}",
            self.upload_url,
            encode(&self.project)
        )
    }

    /// Starts a resumable upload whose file becomes a load job into
    /// `table` (appending Parquet rows) once the last chunk is sent.
    pub async fn start_upload(&self, table: &str) -> Result<ResumableUpload> {
        let job = self.load_job(table, &random_id());
        let what = format!("start the upload of a load job into {table}");
        let url = self
            .with_retry(&what, || async {
                let response = self
                    .authorized(self.http.post(self.jobs_upload_url("resumable")))
                    .await?
                    .json(&job)
                    .send()
                    .await
                    .map_err(|e| from_reqwest(&what, e))?;
                if !response.status().is_success() {
                    return Err(from_http(&what, response).await);
                }
                response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Failure::Permanent(Error::new(
                            ErrorKind::Protocol,
                            format!("BigQuery did not give an upload location to {what}"),
                        ))
                    })
            })
            .await?;
        Ok(ResumableUpload {
            url,
            sent: 0,
            table: table.to_owned(),
        })
    }

    /// Sends `data` as the next chunk of `upload`; with `last`, the file
    /// ends and the load job runs: returns when it has completed. A chunk
    /// that is not the last must be a multiple of [`UPLOAD_CHUNK`]'s unit
    /// (256 KiB). After a failed attempt the server is asked how much it
    /// received, and only the rest is sent again.
    pub async fn put_chunk(
        &self,
        upload: &mut ResumableUpload,
        data: &[u8],
        last: bool,
    ) -> Result<()> {
        let what = format!("upload rows of a load job into {}", upload.table);
        let start = upload.sent;
        let end = start + data.len() as u64;
        let job = self
            .with_retry(&what, || async {
                // Bytes of this chunk the server already has.
                let received = self.upload_status(upload, &what).await?;
                let skip = received.saturating_sub(start).min(data.len() as u64) as usize;
                let rest = &data[skip..];
                let from = start + skip as u64;
                let total = if last {
                    end.to_string()
                } else {
                    "*".to_owned()
                };
                let range = if rest.is_empty() {
                    format!("bytes */{total}")
                } else {
                    format!("bytes {from}-{}/{total}", end - 1)
                };
                let response = self
                    .authorized(self.http.put(&upload.url))
                    .await?
                    .header(reqwest::header::CONTENT_RANGE, range)
                    .body(rest.to_vec())
                    .send()
                    .await
                    .map_err(|e| from_reqwest(&what, e))?;
                let status = response.status();
                if status.as_u16() == 308 && !last {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(from_http(&what, response).await);
                }
                let body = json_body(response, &what).await?;
                Ok(body["jobReference"]["jobId"].as_str().map(str::to_owned))
            })
            .await?;
        upload.sent = end;
        if last {
            let job = job.ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "BigQuery did not start a load job after the upload into {}",
                        upload.table
                    ),
                )
            })?;
            self.wait_for_job(&job, &format!("load rows into {}", upload.table))
                .await?;
        }
        Ok(())
    }

    /// How many bytes of `upload` the server has (0 before the first chunk).
    async fn upload_status(
        &self,
        upload: &ResumableUpload,
        what: &str,
    ) -> std::result::Result<u64, Failure> {
        if upload.sent == 0 {
            return Ok(0);
        }
        let response = self
            .authorized(self.http.put(&upload.url))
            .await?
            .header(reqwest::header::CONTENT_RANGE, "bytes */*")
            .send()
            .await
            .map_err(|e| from_reqwest(what, e))?;
        if response.status().as_u16() != 308 {
            return Err(from_http(what, response).await);
        }
        Ok(response
            .headers()
            .get(reqwest::header::RANGE)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| r.rsplit('-').next())
            .and_then(|last| last.parse::<u64>().ok())
            .map_or(0, |last| last + 1))
    }

    /// Loads one Parquet file into `table` with a multipart upload and
    /// waits for the load job.
    pub async fn load_file(&self, table: &str, parquet: Vec<u8>) -> Result<()> {
        let job_id = random_id();
        let job = self.load_job(table, &job_id);
        let boundary = format!("pgr_{}", random_id());
        let mut body = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{job}\r\n--{boundary}\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&parquet);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let what = format!("upload staged rows into {table}");
        self.with_retry(&what, || async {
            let response = self
                .authorized(self.http.post(self.jobs_upload_url("multipart")))
                .await?
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("multipart/related; boundary={boundary}"),
                )
                .body(body.clone())
                .send()
                .await
                .map_err(|e| from_reqwest(&what, e))?;
            // A retry of a job that was created already finds it by its id.
            if response.status().is_success() || response.status().as_u16() == 409 {
                return Ok(());
            }
            Err(from_http(&what, response).await)
        })
        .await?;
        self.wait_for_job(&job_id, &format!("load staged rows into {table}"))
            .await
    }

    /// Waits until job `job_id` is done; fails with its error if it failed.
    pub async fn wait_for_job(&self, job_id: &str, what: &str) -> Result<()> {
        let mut wait = Duration::from_millis(50);
        loop {
            let job = self
                .with_retry(what, || async {
                    self.rest
                        .job()
                        .get_job(&self.project, job_id, self.location.as_deref())
                        .await
                        .map_err(|e| from_bq_error(what, e))
                })
                .await?;
            let status = job.status.unwrap_or_default();
            if status.state.as_deref() == Some("DONE") {
                if let Some(error) = status.error_result {
                    return Err(super::errors::job_error(what, &error));
                }
                return Ok(());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

/// The cells of result rows as text.
fn cells(rows: Vec<TableRow>) -> Rows {
    rows.into_iter()
        .map(|row| {
            row.columns
                .unwrap_or_default()
                .into_iter()
                .map(|cell| match cell.value {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) => Some(text),
                    Some(other) => Some(other.to_string()),
                })
                .collect()
        })
        .collect()
}

/// The fields of a `tables.get` response.
fn parse_columns(table: &Value) -> Vec<ExistingColumn> {
    let number = |v: &Value| -> Option<u8> {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_u64().and_then(|n| u8::try_from(n).ok()))
    };
    table["schema"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| ExistingColumn {
                    name: f["name"].as_str().unwrap_or_default().to_owned(),
                    type_name: f["type"].as_str().unwrap_or_default().to_owned(),
                    precision: number(&f["precision"]),
                    scale: number(&f["scale"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn json_body(response: reqwest::Response, what: &str) -> std::result::Result<Value, Failure> {
    response.json::<Value>().await.map_err(|e| {
        Failure::Transient(Error::with_source(
            ErrorKind::Sink,
            format!("BigQuery's answer to {what} was not JSON"),
            e,
        ))
    })
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_fields_keep_decimal_parameters() {
        let body = json!({"schema": {"fields": [
            {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "n", "type": "NUMERIC", "precision": "12", "scale": "2"},
        ]}});
        let columns = parse_columns(&body);
        assert_eq!(columns[0].type_name, "INTEGER");
        assert_eq!(columns[1].precision, Some(12));
        assert_eq!(columns[1].scale, Some(2));
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
