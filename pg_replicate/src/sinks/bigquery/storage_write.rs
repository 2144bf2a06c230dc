//! The Storage Write API (gRPC): rows appended to a table's default stream
//! (committed at once), or to a pending stream committed as a whole.
//!
//! The generated client of `gcp-bigquery-client` runs on a channel of ours:
//! TLS with the web PKI roots for `https://` endpoints (Google's), plain
//! HTTP/2 for `http://` ones (emulators). Every request carries the access
//! token and the routing header BigQuery wants.

use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::append_rows_request::{
    ProtoData, Rows,
};
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::append_rows_response::Response;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::big_query_write_client::BigQueryWriteClient;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    write_stream, AppendRowsRequest, BatchCommitWriteStreamsRequest, CreateWriteStreamRequest,
    FinalizeWriteStreamRequest, ProtoRows, ProtoSchema, WriteStream,
};
use prost_types::DescriptorProto;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::config::RetryPolicy;
use super::errors::{from_bq_error, redact, Failure};
use super::retry::with_retry;
use crate::{Error, ErrorKind, Result};

/// Largest message the channel sends or receives.
const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

/// A Storage Write API client for the tables of one dataset.
pub struct StorageWriter {
    client: BigQueryWriteClient<Channel>,
    auth: Arc<dyn Authenticator>,
    retry: RetryPolicy,
    project: String,
    dataset: String,
    max_request_bytes: usize,
}

impl StorageWriter {
    /// A client of `endpoint`; connects on first use.
    pub fn new(
        endpoint: &str,
        auth: Arc<dyn Authenticator>,
        retry: RetryPolicy,
        project: &str,
        dataset: &str,
        max_request_bytes: usize,
    ) -> Result<Self> {
        let config_error = |e: tonic::transport::Error| {
            Error::with_source(
                ErrorKind::Config,
                format!("the Storage Write endpoint {endpoint:?} is not usable"),
                e,
            )
        };
        let mut channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(config_error)?
            .connect_timeout(Duration::from_secs(20))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if endpoint.starts_with("https://") {
            channel = channel
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(config_error)?;
        }
        let client = BigQueryWriteClient::new(channel.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            client,
            auth,
            retry,
            project: project.to_owned(),
            dataset: dataset.to_owned(),
            max_request_bytes,
        })
    }

    fn table_path(&self, table: &str) -> String {
        format!(
            "projects/{}/datasets/{}/tables/{table}",
            self.project, self.dataset
        )
    }

    /// A request carrying the access token and the routing header.
    async fn request<T>(
        &self,
        message: T,
        routing: &str,
    ) -> std::result::Result<tonic::Request<T>, Failure> {
        let mut request = tonic::Request::new(message);
        let token = self
            .auth
            .access_token()
            .await
            .map_err(|e| from_bq_error("get an access token", e))?;
        let metadata = request.metadata_mut();
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Failure::Permanent(Error::new(
                    ErrorKind::Authentication,
                    "the access token is not a valid header value",
                ))
            })?;
            metadata.insert("authorization", value);
        }
        if let Ok(value) = MetadataValue::try_from(routing) {
            metadata.insert("x-goog-request-params", value);
        }
        Ok(request)
    }

    /// Appends `rows` (serialized messages of `descriptor`) to the default
    /// stream of `table`: committed as each request is acknowledged. A
    /// retried request may be stored twice; the staging tables carry a row
    /// id for that.
    pub async fn append_default(
        &self,
        table: &str,
        descriptor: &DescriptorProto,
        rows: Vec<Vec<u8>>,
    ) -> Result<()> {
        let stream = format!("{}/streams/_default", self.table_path(table));
        let what = format!("append rows to {table}");
        let requests = self.split(&stream, descriptor, rows, None);
        for chunk in requests {
            with_retry(&self.retry, &what, || {
                self.send(&stream, vec![chunk.clone()], &what)
            })
            .await?;
        }
        Ok(())
    }

    /// Creates a pending stream of `table`: rows appended to it become
    /// visible all at once when [`StorageWriter::commit`] commits it.
    pub async fn create_pending(&self, table: &str) -> Result<String> {
        let parent = self.table_path(table);
        let what = format!("create a write stream on {table}");
        let stream: WriteStream = with_retry(&self.retry, &what, || async {
            let message = CreateWriteStreamRequest {
                parent: parent.clone(),
                write_stream: Some(WriteStream {
                    r#type: write_stream::Type::Pending as i32,
                    ..WriteStream::default()
                }),
            };
            let request = self.request(message, &format!("parent={parent}")).await?;
            self.client
                .clone()
                .create_write_stream(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| from_status(&what, s))
        })
        .await?;
        Ok(stream.name)
    }

    /// Appends `rows` to the pending `stream` at `offset` (rows already
    /// there); returns the new offset. Offsets make retries exact: a
    /// request BigQuery already has is answered ALREADY_EXISTS and skipped.
    pub async fn append_at(
        &self,
        stream: &str,
        offset: i64,
        descriptor: &DescriptorProto,
        rows: Vec<Vec<u8>>,
    ) -> Result<i64> {
        let what = "append rows to a pending stream";
        let mut offset = offset;
        let chunks = self.split(stream, descriptor, rows, Some(offset));
        for chunk in chunks {
            let count = match &chunk.rows {
                Some(Rows::ProtoRows(data)) => {
                    data.rows.as_ref().map_or(0, |r| r.serialized_rows.len())
                }
                None => 0,
            };
            let mut chunk = chunk;
            chunk.offset = Some(offset);
            with_retry(&self.retry, what, || async {
                match self.send(stream, vec![chunk.clone()], what).await {
                    Err(Failure::Permanent(e)) if e.message().contains("ALREADY_EXISTS") => Ok(()),
                    other => other,
                }
            })
            .await?;
            offset += count as i64;
        }
        Ok(offset)
    }

    /// Finalizes the pending `stream` and commits it to `table`.
    pub async fn commit(&self, table: &str, stream: &str) -> Result<()> {
        let what = format!("commit the rows written to {table}");
        with_retry(&self.retry, &what, || async {
            let request = self
                .request(
                    FinalizeWriteStreamRequest {
                        name: stream.to_owned(),
                    },
                    &format!("name={stream}"),
                )
                .await?;
            self.client
                .clone()
                .finalize_write_stream(request)
                .await
                .map_err(|s| from_status(&what, s))
        })
        .await?;
        let parent = self.table_path(table);
        let response = with_retry(&self.retry, &what, || async {
            let request = self
                .request(
                    BatchCommitWriteStreamsRequest {
                        parent: parent.clone(),
                        write_streams: vec![stream.to_owned()],
                    },
                    &format!("parent={parent}"),
                )
                .await?;
            self.client
                .clone()
                .batch_commit_write_streams(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| from_status(&what, s))
        })
        .await?;
        if let Some(error) = response.stream_errors.first() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "BigQuery did not commit the rows written to {table}: {}",
                    redact(&error.error_message)
                ),
            ));
        }
        Ok(())
    }

    /// Splits `rows` into requests of at most `max_request_bytes`; the
    /// first carries the writer schema.
    fn split(
        &self,
        stream: &str,
        descriptor: &DescriptorProto,
        rows: Vec<Vec<u8>>,
        offset: Option<i64>,
    ) -> Vec<AppendRowsRequest> {
        let mut requests = Vec::new();
        let mut current: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        let flush = |current: &mut Vec<Vec<u8>>, requests: &mut Vec<AppendRowsRequest>| {
            if current.is_empty() {
                return;
            }
            requests.push(AppendRowsRequest {
                write_stream: stream.to_owned(),
                offset,
                rows: Some(Rows::ProtoRows(ProtoData {
                    // Every request names the schema: each is sent on its
                    // own call, so a retry needs no earlier request.
                    writer_schema: Some(ProtoSchema {
                        proto_descriptor: Some(descriptor.clone()),
                    }),
                    rows: Some(ProtoRows {
                        serialized_rows: std::mem::take(current),
                    }),
                })),
                ..AppendRowsRequest::default()
            });
        };
        for row in rows {
            let size = row.len() + 4;
            if bytes + size > self.max_request_bytes {
                flush(&mut current, &mut requests);
                bytes = 0;
            }
            bytes += size;
            current.push(row);
        }
        flush(&mut current, &mut requests);
        requests
    }

    /// Sends `requests` on one AppendRows call and checks every answer.
    async fn send(
        &self,
        stream: &str,
        requests: Vec<AppendRowsRequest>,
        what: &str,
    ) -> std::result::Result<(), Failure> {
        let expected = requests.len();
        let request = self
            .request(
                futures_util::stream::iter(requests),
                &format!("write_stream={stream}"),
            )
            .await?;
        let mut responses = self
            .client
            .clone()
            .append_rows(request)
            .await
            .map_err(|s| from_status(what, s))?
            .into_inner();
        let mut answered = 0;
        while let Some(response) = responses
            .message()
            .await
            .map_err(|s| from_status(what, s))?
        {
            answered += 1;
            if let Some(row) = response.row_errors.first() {
                return Err(Failure::Permanent(Error::new(
                    ErrorKind::Data,
                    format!(
                        "BigQuery rejected row {} of a request to {what}: {}",
                        row.index,
                        redact(&row.message)
                    ),
                )));
            }
            if let Some(Response::Error(status)) = response.response {
                let code = Code::from_i32(status.code);
                return Err(from_status(what, Status::new(code, status.message)));
            }
            if answered == expected {
                break;
            }
        }
        if answered < expected {
            return Err(Failure::Transient(Error::new(
                ErrorKind::Connection,
                format!(
                    "BigQuery ended the AppendRows call to {what} before answering every request"
                ),
            )));
        }
        Ok(())
    }
}

/// A gRPC status as a failure.
fn from_status(what: &str, status: Status) -> Failure {
    let message = redact(status.message());
    let code = status.code();
    let error = |kind, fix: &str| {
        Error::new(
            kind,
            format!("BigQuery Storage Write could not {what} ({code:?}): {message}{fix}"),
        )
    };
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown
        | Code::Cancelled => Failure::Transient(error(ErrorKind::Connection, "")),
        Code::Unauthenticated | Code::PermissionDenied => Failure::Permanent(error(
            ErrorKind::Authentication,
            "; grant the service account roles/bigquery.dataEditor on the dataset",
        )),
        Code::NotFound => Failure::Permanent(error(
            ErrorKind::Config,
            "; check the project, dataset and the Storage Write endpoint",
        )),
        Code::AlreadyExists => Failure::Permanent(error(ErrorKind::Sink, " (ALREADY_EXISTS)")),
        _ => Failure::Permanent(error(ErrorKind::Data, "")),
    }
}
