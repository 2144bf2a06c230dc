//! Retries with exponential backoff and jitter, for every BigQuery call.

use tracing::warn;

use super::config::RetryPolicy;
use super::errors::Failure;
use crate::Result;

/// Runs `f` until it succeeds, fails for good, or `policy` is exhausted;
/// `what` names the operation in logs and errors.
pub async fn with_retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(error)) => return Err(error),
            Err(Failure::Transient(error)) if attempt >= policy.max_attempts => {
                return Err(
                    error.context(format!("BigQuery kept failing after {attempt} attempts"))
                );
            }
            Err(Failure::Transient(error)) => {
                let wait = policy.backoff(attempt, jitter());
                warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "BigQuery failed to {what}; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// A value in `0..1` that differs between calls, to spread retries.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::{Error, ErrorKind};

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_permanent_ones_are_not() {
        let calls = AtomicU32::new(0);
        let value = with_retry(&quick(5), "test", || async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                Err(Failure::Transient(Error::new(
                    ErrorKind::Connection,
                    "down",
                )))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::Relaxed)), (7, 3));

        calls.store(0, Ordering::Relaxed);
        let error = with_retry(&quick(5), "test", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(Failure::Permanent(Error::new(ErrorKind::Config, "bad")))
        })
        .await
        .unwrap_err();
        assert_eq!(
            (error.kind(), calls.load(Ordering::Relaxed)),
            (ErrorKind::Config, 1)
        );

        let error = with_retry(&quick(3), "test", || async {
            Err::<(), _>(Failure::Transient(Error::new(
                ErrorKind::Connection,
                "down",
            )))
        })
        .await
        .unwrap_err();
        assert!(error.message().contains("after 3 attempts"), "{error}");
    }
}
