//! BigQuery failures as the library's errors: transient ones (the retry
//! loop tries again) apart from permanent ones, each with a message that
//! names the cause and the fix. Server messages are quoted with the values
//! they quote removed, so no row data reaches the logs.

use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::error_proto::ErrorProto;

use crate::{Error, ErrorKind};

/// A failed attempt: worth retrying or not.
#[derive(Debug)]
pub enum Failure {
    /// May pass: connection errors, HTTP 5xx and 429, rate limits, aborted
    /// transactions.
    Transient(Error),
    /// Will not pass without a change: bad credentials, missing objects,
    /// rejected rows or SQL.
    Permanent(Error),
}

/// Reasons BigQuery gives for failures that pass with time.
const TRANSIENT_REASONS: [&str; 6] = [
    "backendError",
    "quotaExceeded",
    "internalError",
    "rateLimitExceeded",
    "jobRateLimitExceeded",
    "tableUnavailable",
];

/// A failure BigQuery answered with HTTP `code`, a `reason` and `message`.
pub fn classify(what: &str, code: i64, reason: &str, message: &str) -> Failure {
    let message = redact(message);
    let aborted = message.contains("concurrent update") || message.contains("aborted due to");
    if code == 429 || code >= 500 || TRANSIENT_REASONS.contains(&reason) || aborted {
        return Failure::Transient(Error::new(
            ErrorKind::Sink,
            format!("BigQuery could not {what} for now (HTTP {code}, {reason}): {message}"),
        ));
    }
    let (kind, fix) = match (code, reason) {
        (401, _) => (
            ErrorKind::Authentication,
            "check the service account key (it may be revoked or of another project)",
        ),
        (403, _) => (
            ErrorKind::Authentication,
            "grant the service account roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser \
             on the project",
        ),
        (404, _) => (
            ErrorKind::Config,
            "check the project and dataset ids (the dataset must exist)",
        ),
        _ => (
            ErrorKind::Data,
            "BigQuery refused the request; the message says why",
        ),
    };
    Failure::Permanent(Error::new(
        kind,
        format!("BigQuery refused to {what} (HTTP {code}, {reason}): {message}; {fix}"),
    ))
}

/// A `gcp-bigquery-client` error.
pub fn from_bq_error(what: &str, error: BQError) -> Failure {
    match error {
        BQError::ResponseError { error } => {
            let nested = error.error;
            let reason = nested
                .errors
                .first()
                .and_then(|e| e.get("reason"))
                .cloned()
                .unwrap_or_default();
            classify(what, nested.code, &reason, &nested.message)
        }
        BQError::RequestError(e) => from_reqwest(what, e),
        BQError::AuthError(e) => Failure::Permanent(Error::new(
            ErrorKind::Authentication,
            format!("Google refused the service account's credentials ({e}); check the key, or download a new one"),
        )),
        BQError::YupAuthError(e) => {
            use gcp_bigquery_client::yup_oauth2::Error as Yup;
            match e {
                Yup::AuthError(auth) => Failure::Permanent(Error::new(
                    ErrorKind::Authentication,
                    format!(
                        "Google refused the service account's credentials ({auth}); check the key, or download \
                         a new one"
                    ),
                )),
                other => Failure::Transient(Error::new(
                    ErrorKind::Connection,
                    format!("could not get an access token to {what}: {other}"),
                )),
            }
        }
        other => Failure::Transient(Error::with_source(
            ErrorKind::Sink,
            format!("BigQuery failed to {what}"),
            other,
        )),
    }
}

/// A transport error of `reqwest`: the endpoint could not be reached or
/// the connection broke.
pub fn from_reqwest(what: &str, error: reqwest::Error) -> Failure {
    let url = error
        .url()
        .map(|u| format!("{}://{}", u.scheme(), u.authority()))
        .unwrap_or_default();
    Failure::Transient(Error::with_source(
        ErrorKind::Connection,
        format!(
            "could not reach BigQuery at {url} to {what}; check the endpoint and the network (retried with \
             backoff)"
        ),
        error.without_url(),
    ))
}

/// An unsuccessful HTTP response.
pub async fn from_http(what: &str, response: reqwest::Response) -> Failure {
    let code = i64::from(response.status().as_u16());
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let error = &body["error"];
    let reason = error["errors"][0]["reason"].as_str().unwrap_or("");
    let message = error["message"].as_str().unwrap_or("no message");
    classify(what, code, reason, message)
}

/// The error result of a job that ended in failure.
pub fn job_error(what: &str, error: &ErrorProto) -> Error {
    let reason = error.reason.as_deref().unwrap_or("");
    let message = error.message.as_deref().unwrap_or("no message");
    let location = error
        .location
        .as_deref()
        .map(|l| format!(" (at {l})"))
        .unwrap_or_default();
    match classify(what, 400, reason, &format!("{message}{location}")) {
        Failure::Transient(e) | Failure::Permanent(e) => e,
    }
}

/// `message` with quoted text replaced by `…` and cut to 500 characters:
/// BigQuery quotes offending values in its messages.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(520));
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
        if out.len() >= 500 {
            out.push('…');
            break;
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

/// 32 random hex digits, for job and request ids.
pub fn random_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: the time and a counter are unique enough
        // for ids that only need to differ from each other.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = (nanos ^ (u128::from(n) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_removed_from_server_messages() {
        assert_eq!(
            redact("Casting value \"1234567\" to type DECIMAL(38,9) failed"),
            "Casting value \"…\" to type DECIMAL(38,9) failed"
        );
        assert_eq!(redact("Invalid date: '10000-01-01"), "Invalid date: '…");
        assert!(redact(&"x".repeat(2000)).chars().count() <= 502);
    }

    #[test]
    fn failures_are_classified_with_a_fix() {
        assert!(matches!(
            classify("x", 503, "backendError", "m"),
            Failure::Transient(_)
        ));
        assert!(matches!(classify("x", 429, "", "m"), Failure::Transient(_)));
        assert!(matches!(
            classify(
                "x",
                400,
                "invalidQuery",
                "Transaction is aborted due to concurrent update"
            ),
            Failure::Transient(_)
        ));
        let Failure::Permanent(e) = classify("x", 403, "accessDenied", "denied") else {
            panic!("permanent")
        };
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert!(e.message().contains("roles/bigquery.dataEditor"));
        let Failure::Permanent(e) = classify("x", 404, "notFound", "Not found: Dataset p:d") else {
            panic!("permanent")
        };
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(random_id().len() == 32 && random_id() != random_id());
    }
}
