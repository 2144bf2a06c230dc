//! The examples' `--metrics-addr`: the `postgres` example replicating into
//! a second database serves `/metrics` in the Prometheus text format and
//! `/health` (200 once streaming); the scraped counters match the rows
//! copied and the changes applied, and the slot's retained WAL is reported.
//! The example is built by `scripts/test` with the tests.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{example_binary, free_local_addr, http_get, Example};
use crate::support::fresh_database;

/// The value of the sample of `metric` whose labels include every one of
/// `labels` (`name="value"`), in a Prometheus text exposition.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} "))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_and_health_follow_a_running_example() {
    let source = fresh_database("metrics_endpoint").await;
    let target = fresh_database("metrics_endpoint_target").await;
    let publication = source.unique_name("pub");
    let slot = source.unique_name("slot");
    source
        .execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, v text);
             INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1234) g;
             ANALYZE items;
             CREATE PUBLICATION {publication} FOR TABLE items;"
        ))
        .await;
    let config = source.config();
    let target_config = target.config();
    let password = config.password.clone().unwrap_or_default();
    let url = format!(
        "postgres://{}:{password}@{}:{}/{}?sslmode=disable",
        target_config.username, target_config.host, target_config.port, target_config.dbname
    );
    let addr = free_local_addr();
    let log = std::env::temp_dir().join(format!("pgr_metrics_endpoint_{}.log", source.name()));
    let _example = Example(
        Command::new(example_binary("postgres"))
            .args([
                "--db-host",
                &config.host,
                "--db-port",
                &config.port.to_string(),
            ])
            .args([
                "--db-name",
                &config.dbname,
                "--db-username",
                &config.username,
            ])
            .args([
                "--sslmode",
                "disable",
                "--metrics-addr",
                &addr,
                "--target",
                &url,
            ])
            .args(["cdc", &publication, &slot])
            .env("PGPASSWORD", &password)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready only once streaming (after the backfill).
    let start = Instant::now();
    loop {
        match http_get(&addr, "/health").await {
            Some((200, body)) => {
                assert_eq!(body, "streaming\n");
                break;
            }
            Some((503, body)) => assert!(
                ["starting\n", "copying\n"].contains(&body.as_str()),
                "unexpected /health before streaming: {body}"
            ),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the example did not report streaming within 60 s; its log:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two transactions (one query string would make them one).
    source
        .execute("UPDATE items SET v = v || '!' WHERE id <= 10")
        .await;
    source
        .execute("BEGIN; DELETE FROM items WHERE id > 1230; INSERT INTO items VALUES (5000, 'new'); COMMIT;")
        .await;
    let pipeline = "pipeline=\"postgres\"";
    let table = "table=\"public.items\"";
    let start = Instant::now();
    let metrics = loop {
        if let Some((200, text)) = http_get(&addr, "/metrics").await {
            let changes = sample(&text, "pg_replicate_changes_total", &[pipeline, table]);
            let retained = sample(
                &text,
                "pg_replicate_slot_retained_bytes",
                &[&format!("slot=\"{slot}\"")],
            );
            if changes == Some(15.0) && retained.is_some() {
                break text;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the changes and the slot's WAL did not show in /metrics within 60 s; its log:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sample(
            &metrics,
            "pg_replicate_rows_copied_total",
            &[pipeline, table]
        ),
        Some(1234.0)
    );
    assert_eq!(
        sample(&metrics, "pg_replicate_tables_copied_total", &[pipeline]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "pg_replicate_transactions_total", &[pipeline]),
        Some(2.0)
    );
    assert!(sample(&metrics, "pg_replicate_stored_lsn", &[pipeline]).is_some_and(|lsn| lsn > 0.0));
    assert!(sample(&metrics, "pg_replicate_lag_seconds", &[pipeline]).is_some_and(|lag| lag < 60.0));
    assert!(
        metrics.contains("# TYPE pg_replicate_changes_total counter"),
        "{metrics}"
    );
    let client = target.client().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1231, "1,234 copied, 4 deleted, 1 inserted");
}
