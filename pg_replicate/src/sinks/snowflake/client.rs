//! [`SnowflakeClient`]: Snowflake's REST protocol (the one its connectors
//! speak) on `reqwest`: login with a key-pair JWT or a password, queries
//! with bound values, results as JSON or Arrow, queries still running
//! polled until they end, and a session that expired logged in again.
//!
//! Every request has a deadline (`with_request_timeout`); a query with its
//! polling, `with_query_timeout`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;
use serde_json::{json, Value};
use tracing::debug;

use super::auth::{jwt_account, SigningKey};
use super::binding::{array_bindings, row_bindings, Binding};
use super::config::{SnowflakeConfig, SnowflakeCredentials};
use super::result::QueryResult;
use super::s3::{sha256_hex, signed_put, S3Credentials, SignedPut};
use crate::{Error, ErrorKind, Result};

/// Codes of a query still running: poll its `getResultUrl`.
const IN_PROGRESS: [&str; 2] = ["333333", "333334"];
/// Codes of an expired session (or its token): log in again.
const SESSION_EXPIRED: [&str; 2] = ["390112", "390114"];
/// Pause between polls of a running query.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The client's name in login requests.
const CLIENT_APP_ID: &str = "pg_replicate";

/// A logged-in Snowflake session.
pub struct SnowflakeClient {
    http: reqwest::Client,
    config: SnowflakeConfig,
    base: String,
    key: Option<SigningKey>,
    token: String,
    sequence: u64,
}

impl std::fmt::Debug for SnowflakeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeClient")
            .field("base", &self.base)
            .field("account", &self.config.account)
            .field("user", &self.config.user)
            .finish_non_exhaustive()
    }
}

impl SnowflakeClient {
    /// Reads the credentials and logs in.
    pub async fn connect(config: SnowflakeConfig) -> Result<Self> {
        let key = match &config.credentials {
            SnowflakeCredentials::KeyPair {
                private_key_pem,
                passphrase,
            } => Some(SigningKey::from_pem(
                private_key_pem,
                passphrase.as_deref(),
            )?),
            SnowflakeCredentials::Password(_) => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Config, "cannot build an HTTP client", e))?;
        let mut client = Self {
            http,
            base: config.base_url(),
            config,
            key,
            token: String::new(),
            sequence: 0,
        };
        client.login().await?;
        Ok(client)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn login(&mut self) -> Result<()> {
        let config = &self.config;
        let mut data = json!({
            "CLIENT_APP_ID": CLIENT_APP_ID,
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": jwt_account(&config.account),
            "LOGIN_NAME": config.user,
            "CLIENT_ENVIRONMENT": { "APPLICATION": CLIENT_APP_ID },
            "SESSION_PARAMETERS": {},
        });
        match (&config.credentials, &self.key) {
            (SnowflakeCredentials::Password(password), _) => {
                data["PASSWORD"] = json!(password);
            }
            (SnowflakeCredentials::KeyPair { .. }, Some(key)) => {
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(key.jwt(&config.account, &config.user, unix_seconds())?);
            }
            (SnowflakeCredentials::KeyPair { .. }, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "the Snowflake key was not read",
                ))
            }
        }
        let mut params = vec![("requestId", request_id()?)];
        for (name, value) in [
            ("databaseName", &config.database),
            ("schemaName", &config.schema),
            ("warehouse", &config.warehouse),
            ("roleName", &config.role),
        ] {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        let url = self.url("/session/v1/login-request", &params)?;
        let response = self
            .send(self.http.post(url).json(&json!({ "data": data })), "log in")
            .await?;
        if response["success"].as_bool() != Some(true) {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!(
                    "Snowflake refused the login of user {} to account {}: {} (code {}); check the \
                     user, the account and the {}",
                    config.user,
                    config.account,
                    response["message"].as_str().unwrap_or("no message"),
                    code(&response),
                    match config.credentials {
                        SnowflakeCredentials::Password(_) => "password",
                        SnowflakeCredentials::KeyPair { .. } =>
                            "public key set on the user (ALTER USER … SET RSA_PUBLIC_KEY)",
                    }
                ),
            ));
        }
        self.token = response["data"]["token"]
            .as_str()
            .ok_or_else(|| protocol("the login answer has no session token"))?
            .to_owned();
        debug!(
            base = %self.base,
            user = %config.user,
            key = self.key.as_ref().map(SigningKey::fingerprint),
            "logged in to Snowflake"
        );
        Ok(())
    }

    /// Runs one statement with `bindings` for its placeholders (`?` or
    /// `:1`, `:2`, …).
    pub async fn query(&mut self, sql: &str, bindings: &[Binding]) -> Result<QueryResult> {
        let bindings = (!bindings.is_empty()).then(|| row_bindings(bindings));
        self.run(sql, bindings).await
    }

    /// Runs one statement once per row of `rows`, in one request (array
    /// binding: an `INSERT … VALUES (?, ?)` of many rows).
    pub async fn query_rows(&mut self, sql: &str, rows: &[Vec<Binding>]) -> Result<QueryResult> {
        let bindings = array_bindings(rows)?;
        self.run(sql, Some(bindings)).await
    }

    /// Uploads `bytes` as file `name` into `location` of an internal stage
    /// (`STAGE` or `STAGE/path`), replacing a file of that name.
    pub async fn put_file(&mut self, location: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        let sql = format!("PUT file:///{name} @{location} AUTO_COMPRESS=FALSE OVERWRITE=TRUE");
        let data = self.run_data(&sql, None).await?;
        let info = &data["stageInfo"];
        let kind = info["locationType"].as_str().unwrap_or("unknown");
        let (url, headers) = match (kind, info["presignedUrl"].as_str()) {
            ("GCS", Some(url)) if !url.is_empty() => (url.to_owned(), Vec::new()),
            ("S3", _) => {
                let signed = s3_put(info, name, &bytes, location)?;
                (signed.url, signed.headers)
            }
            ("AZURE", _) => (azure_url(info, name, location)?, vec![(
                "x-ms-blob-type".to_owned(),
                "BlockBlob".to_owned(),
            )]),
            _ => {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "Snowflake keeps stage @{location} on {kind} storage, where this client cannot upload \
                         (it uploads to presigned URLs, S3 and Azure)"
                    ),
                ))
            }
        };
        let size = bytes.len();
        let body = bytes::Bytes::from(bytes);
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let mut request = self.http.put(&url).body(body.clone());
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    let status = response.status();
                    Failure {
                        error: Error::new(
                            ErrorKind::Sink,
                            format!(
                                "the upload of file {name} ({size} bytes) to stage @{location} answered HTTP {status}"
                            ),
                        ),
                        transient: status.as_u16() == 429 || status.is_server_error(),
                    }
                }
                Err(e) => Failure::transient(Error::with_source(
                    ErrorKind::Connection,
                    format!("cannot upload file {name} to stage @{location}"),
                    e,
                )),
            };
            if !failure.transient || attempt >= self.config.request_attempts {
                return Err(failure.error);
            }
            debug!(error = %failure.error, attempt, "upload failed; sending it again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(8));
            attempt += 1;
        }
        debug!(%location, name, size, "file uploaded to a Snowflake stage");
        Ok(())
    }

    async fn run(&mut self, sql: &str, bindings: Option<Value>) -> Result<QueryResult> {
        let data = self.run_data(sql, bindings).await?;
        QueryResult::from_data(&data)
    }

    /// Runs one statement and returns the `data` of its answer.
    async fn run_data(&mut self, sql: &str, bindings: Option<Value>) -> Result<Value> {
        let deadline = Instant::now() + self.config.query_timeout;
        let mut logged_in_again = false;
        loop {
            self.sequence += 1;
            let mut body = json!({
                "sqlText": sql,
                "asyncExec": false,
                "sequenceId": self.sequence,
                "querySubmissionTime": unix_millis(),
            });
            if let Some(bindings) = &bindings {
                body["bindings"] = bindings.clone();
            }
            let url = self.url("/queries/v1/query-request", &[("requestId", request_id()?)])?;
            let request = self.authorized(self.http.post(url)).json(&body);
            let mut response = self.send(request, "run a query").await?;
            while IN_PROGRESS.contains(&code(&response).as_str()) {
                if Instant::now() > deadline {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!(
                            "a Snowflake query ran longer than {} s (with_query_timeout); it may \
                             still be running: see its query id {}",
                            self.config.query_timeout.as_secs(),
                            response["data"]["queryId"].as_str().unwrap_or("unknown")
                        ),
                    ));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
                let path = response["data"]["getResultUrl"]
                    .as_str()
                    .ok_or_else(|| protocol("a running query's answer has no getResultUrl"))?;
                let url = self.url(path, &[])?;
                response = self
                    .send(self.authorized(self.http.get(url)), "poll a running query")
                    .await?;
            }
            if response["success"].as_bool() == Some(true) {
                return Ok(response["data"].take());
            }
            let code = code(&response);
            if SESSION_EXPIRED.contains(&code.as_str()) && !logged_in_again {
                // Refused before it ran: safe to send again.
                debug!("Snowflake session expired; logging in again");
                self.login().await?;
                logged_in_again = true;
                continue;
            }
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "Snowflake error {code}{}: {}",
                    response["data"]["sqlState"]
                        .as_str()
                        .map(|s| format!(" (SQL state {s})"))
                        .unwrap_or_default(),
                    response["message"].as_str().unwrap_or("no message"),
                ),
            ));
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Snowflake Token=\"{}\"", self.token),
            )
            .header(reqwest::header::ACCEPT, "application/snowflake")
    }

    fn url(&self, path: &str, params: &[(&str, String)]) -> Result<reqwest::Url> {
        let text = format!("{}{path}", self.base);
        reqwest::Url::parse_with_params(&text, params).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("the Snowflake URL {text} is not valid; check the account or base URL"),
                e,
            )
        })
    }

    /// Sends a request and reads its JSON answer; a request that could
    /// not be sent, timed out, or was answered HTTP 429 or 5xx is sent again
    /// (the same request: a query keeps its request id) after a pause that
    /// doubles from 0.5 s up to 8 s, at most `with_request_attempts` times
    /// in all.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let attempts = self.config.request_attempts.max(1);
        let mut pause = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let this = request.try_clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Sink,
                    format!("a Snowflake request cannot be repeated ({what})"),
                )
            })?;
            match self.send_once(this, what).await {
                Ok(value) => return Ok(value),
                Err(Failure { error, transient }) if transient && attempt < attempts => {
                    debug!(%error, attempt, pause_ms = pause.as_millis() as u64, "Snowflake request failed; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                Err(Failure { error, transient }) => {
                    return Err(if transient && attempt > 1 {
                        error.context(format!("after {attempt} attempts"))
                    } else {
                        error
                    })
                }
            }
        }
    }

    async fn send_once(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> std::result::Result<Value, Failure> {
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "did not answer in time"
            } else {
                "cannot be reached"
            };
            Failure::transient(Error::with_source(
                ErrorKind::Connection,
                format!(
                    "Snowflake at {} {kind} ({what}); check the account or base URL and the network",
                    self.base
                ),
                e,
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Failure::transient(Error::with_source(
                ErrorKind::Connection,
                format!("cannot read Snowflake's answer ({what})"),
                e,
            ))
        })?;
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            let code = status.as_u16();
            let error = Error::new(
                if matches!(code, 401 | 403) {
                    ErrorKind::Authentication
                } else {
                    ErrorKind::Sink
                },
                format!("Snowflake answered HTTP {status} ({what}): {excerpt}"),
            );
            return Err(Failure {
                error,
                transient: code == 429 || status.is_server_error(),
            });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            error: Error::with_source(
                ErrorKind::Protocol,
                format!(
                    "Snowflake's answer is not JSON ({what}); is {} a Snowflake endpoint?",
                    self.base
                ),
                e,
            ),
            transient: false,
        })
    }
}

/// The signed upload of `bytes` as file `name` to the S3 stage `info`
/// describes (`stageInfo` of a `PUT` answer).
fn s3_put(info: &Value, name: &str, bytes: &[u8], location: &str) -> Result<SignedPut> {
    let missing = |what: &str| {
        protocol(&format!(
            "the PUT answer for stage @{location} on S3 has no {what}"
        ))
    };
    let place = info["location"]
        .as_str()
        .ok_or_else(|| missing("location"))?;
    let (bucket, prefix) = place.split_once('/').unwrap_or((place, ""));
    let region = info["region"].as_str().ok_or_else(|| missing("region"))?;
    let creds = &info["creds"];
    let credentials = S3Credentials {
        key_id: creds["AWS_KEY_ID"]
            .as_str()
            .ok_or_else(|| missing("AWS_KEY_ID"))?
            .to_owned(),
        secret: creds["AWS_SECRET_KEY"]
            .as_str()
            .ok_or_else(|| missing("AWS_SECRET_KEY"))?
            .to_owned(),
        token: creds["AWS_TOKEN"].as_str().map(str::to_owned),
    };
    let endpoint = info["endPoint"].as_str().filter(|e| !e.is_empty());
    let key = format!("{}{name}", prefix);
    Ok(signed_put(
        bucket,
        &key,
        region,
        endpoint,
        &credentials,
        &sha256_hex(bytes),
        &amz_date(),
    ))
}

/// The URL uploading file `name` to the Azure stage `info` describes: the
/// blob's URL with the stage's SAS token as its query (sent with
/// `x-ms-blob-type: BlockBlob`).
fn azure_url(info: &Value, name: &str, location: &str) -> Result<String> {
    let missing = |what: &str| {
        protocol(&format!(
            "the PUT answer for stage @{location} on Azure has no {what}"
        ))
    };
    let place = info["location"]
        .as_str()
        .ok_or_else(|| missing("location"))?;
    let account = info["storageAccount"]
        .as_str()
        .ok_or_else(|| missing("storageAccount"))?;
    let endpoint = info["endPoint"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or("blob.core.windows.net");
    let token = info["creds"]["AZURE_SAS_TOKEN"]
        .as_str()
        .ok_or_else(|| missing("AZURE_SAS_TOKEN"))?
        .trim_start_matches('?');
    let path = super::s3::encode_path(&format!("/{place}{name}"));
    Ok(format!("https://{account}.{endpoint}{path}?{token}"))
}

/// Now as `YYYYMMDDTHHMMSSZ`.
fn amz_date() -> String {
    let mut text = Vec::new();
    crate::sinks::stdout::json::write_timestamp(
        &mut text,
        unix_seconds() as i64 * 1_000_000,
        false,
    );
    let digits: String = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{digits}Z")
}

/// A failed request, and whether sending it again may succeed.
struct Failure {
    error: Error,
    transient: bool,
}

impl Failure {
    fn transient(error: Error) -> Self {
        Self {
            error,
            transient: true,
        }
    }
}

/// A response's `code`, as text (Snowflake sends it as a string, some
/// servers as a number).
fn code(response: &Value) -> String {
    match &response["code"] {
        Value::String(code) => code.clone(),
        Value::Number(code) => code.to_string(),
        _ => String::new(),
    }
}

fn protocol(problem: &str) -> Error {
    Error::new(ErrorKind::Protocol, format!("Snowflake: {problem}"))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random UUID (version 4), as Snowflake's `requestId` wants.
fn request_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Sink, "no randomness for a request id"))?;
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_stage_answer_becomes_a_signed_put() {
        let info = json!({
            "locationType": "S3",
            "location": "sfc-eu-stage/abc123/stages/xyz/",
            "region": "eu-west-1",
            "creds": { "AWS_KEY_ID": "KEY", "AWS_SECRET_KEY": "SECRET", "AWS_TOKEN": "TOKEN" },
        });
        let put = s3_put(&info, "part-1.csv", b"1,2\n", "_PGR_STAGE/cdc").unwrap();
        assert_eq!(
            put.url,
            "https://sfc-eu-stage.s3.eu-west-1.amazonaws.com/abc123/stages/xyz/part-1.csv"
        );
        assert!(put.headers.iter().any(|(n, _)| n == "authorization"));
        let date = &put
            .headers
            .iter()
            .find(|(n, _)| n == "x-amz-date")
            .unwrap()
            .1;
        assert_eq!(date.len(), 16, "{date}");
        assert!(date.ends_with('Z') && date.as_bytes()[8] == b'T', "{date}");
        let error = s3_put(&json!({"locationType": "S3"}), "f", b"", "S").unwrap_err();
        assert!(error.message().contains("no location"), "{error}");
    }

    #[test]
    fn an_azure_stage_answer_becomes_a_blob_url_with_its_sas_token() {
        let info = json!({
            "locationType": "AZURE",
            "location": "stages/abc123/",
            "storageAccount": "sfcstage",
            "endPoint": "blob.core.windows.net",
            "creds": { "AZURE_SAS_TOKEN": "?sv=2020&sig=xyz" },
        });
        assert_eq!(
            azure_url(&info, "part 1.csv", "S").unwrap(),
            "https://sfcstage.blob.core.windows.net/stages/abc123/part%201.csv?sv=2020&sig=xyz"
        );
    }
}
