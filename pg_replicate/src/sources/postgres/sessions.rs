//! The source's own sessions on the server, found by a tag in their
//! `application_name`.
//!
//! A connection lost on the way (a stalled network, a proxy that keeps the
//! server's side open) leaves its session on the server until the server's
//! TCP keepalive or `wal_sender_timeout` notices, with its transaction, its
//! exported snapshot or its slot still held. When the source prepares again
//! after a failure it ends those sessions itself, so the retry does not
//! wait for them.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tracing::{info, warn};

/// Longest `application_name` the server keeps (NAMEDATALEN - 1 bytes).
const MAX_APPLICATION_NAME: usize = 63;

/// How long to wait for ended sessions to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// `base` followed by a tag unique to this source instance, within the
/// server's length limit. Characters the server would rewrite (anything but
/// printable ASCII) become `?` here, so the name the server shows is exactly
/// this one.
pub(super) fn tagged_application_name(base: &str) -> String {
    let tag = format!(" pgr-{:016x}", random_u64());
    let room = MAX_APPLICATION_NAME - tag.len();
    let mut name: String = base
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(room)
        .collect();
    name.push_str(&tag);
    name
}

/// A random number from the standard library's per-instance hash keys
/// (for names that must not collide; no cryptographic quality).
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Ends every other session named `application_name` (the sessions an
/// earlier attempt of this source left behind) and waits until they have
/// exited. Only logs when it cannot: a role may lack the right to see or
/// signal them, and the retry then waits for the server as before.
pub(super) async fn end_stale_sessions(client: &Client, application_name: &str) {
    let ended = match client
        .query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<_>>(),
        Err(error) => {
            warn!(%error, "could not end this source's earlier sessions; the retry waits until the server ends them");
            return;
        }
    };
    if ended.is_empty() {
        return;
    }
    info!(
        sessions = ended.len(),
        "ended this source's sessions left from the failed attempt"
    );
    let start = Instant::now();
    while start.elapsed() < EXIT_WAIT {
        match client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&ended],
            )
            .await
        {
            Ok(row) if row.get::<_, i64>(0) == 0 => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => {
                warn!(%error, "could not watch the ended sessions exit");
                return;
            }
        }
    }
    warn!(
        seconds = EXIT_WAIT.as_secs(),
        "the ended sessions had not exited yet; going on"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_names_fit_and_differ() {
        let a = tagged_application_name("pg_replicate");
        let b = tagged_application_name("pg_replicate");
        assert_ne!(a, b);
        assert!(a.starts_with("pg_replicate pgr-"), "{a}");

        let long = tagged_application_name(&"é".repeat(100));
        assert_eq!(long.len(), MAX_APPLICATION_NAME);
        assert!(long.starts_with("???"), "{long}");
        assert!(long.is_ascii());
    }
}
