//! The Snowflake sink keeping changes in landing tables until a merge
//! (`MergeMode::External`, whose merge statements a `MergeMode::Task` task
//! runs; fakesnow has no tasks), against the real emulator: changes landed
//! over many batches, with unchanged TOAST values whose rows are only in
//! the landing table or only in the target, moved keys, a truncate inside
//! a transaction and columns added and dropped between merges, all merge
//! into tables equal to Postgres; the slot is never confirmed past what is
//! landed; a switch back to the inline mode refuses to drop unmerged
//! changes.

use std::time::{Duration, Instant};

use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sinks::snowflake::{
    MergeMode, SnowflakeClient, SnowflakeSink, SnowflakeSinkConfig,
};
use pg_replicate::types::Lsn;
use pg_replicate::ErrorKind;

use crate::common::{start_with, Running};
use crate::snowflake_sink::{
    assert_confirmed_not_ahead, both_sides, client, connection, copied_tables, insert_items,
    log_tail, rows, stored_lsn, Kind, ITEMS,
};
use crate::support::{fresh_database, TestDb};

const LOG: &[(&str, Kind)] = &[("id", Kind::Text), ("note", Kind::Text)];

fn sink_config(database: &str, identity: &str, merge: MergeMode) -> SnowflakeSinkConfig {
    SnowflakeSinkConfig::new(connection(database))
        .with_identity(identity)
        .with_merge(merge)
}

/// Inserts sentinel `round` into `log` and waits (at most 60 s) until it
/// is in `landing` and the state is stored past it: everything written
/// before it is landed.
async fn land(
    db: &TestDb,
    client: &mut SnowflakeClient,
    running: &Running,
    landing: &str,
    identity: &str,
    round: i64,
) {
    db.execute(&format!(
        "INSERT INTO log VALUES ({round}, 'round {round}')"
    ))
    .await;
    let started = Instant::now();
    loop {
        let landed = rows(
            client,
            &format!("SELECT MAX(_PGR_LSN) FROM {landing} WHERE \"ID\" = {round}"),
        )
        .await
        .ok()
        .and_then(|r| r.first().and_then(|row| row[0].clone()))
        .map(|lsn| Lsn(lsn.parse().unwrap()));
        if let Some(landed) = landed {
            if stored_lsn(client, identity)
                .await
                .is_some_and(|s| s >= landed)
            {
                return;
            }
        }
        assert!(
            !running.handle.is_finished(),
            "the pipeline ended before round {round} was landed; the emulator's log ends with:\n{}",
            log_tail(30)
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "round {round} was not landed in {landing} and stored within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most 60 s) until the two tables are copied; panics with the
/// pipeline's outcome when it ends first.
async fn copied(client: &mut SnowflakeClient, running: Running) -> Running {
    let started = Instant::now();
    loop {
        let copied = copied_tables(client).await;
        if copied.as_deref() == Some("2") {
            return running;
        }
        if running.handle.is_finished() || started.elapsed() > Duration::from_secs(60) {
            let outcome = running.stop().await;
            panic!("the two tables were not copied within 60 s (now {copied:?}); the pipeline ended with {outcome:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Merges the landing tables from a sink of its own, as a separate
/// process would; returns how many tables had changes.
pub(crate) async fn merge(database: &str) -> usize {
    let mut merger = SnowflakeSink::connect(sink_config(database, "merger", MergeMode::External))
        .await
        .unwrap();
    merger
        .merge_landing()
        .await
        .unwrap_or_else(|e| panic!("merge the landing tables: {e}"))
}

/// Merges like [`merge`], unless no sink has recorded merge statements
/// yet.
pub(crate) async fn merge_if_ready(database: &str) {
    let mut merger = SnowflakeSink::connect(sink_config(database, "merger", MergeMode::External))
        .await
        .unwrap();
    if let Err(error) = merger.merge_landing().await {
        let message = error.to_string();
        assert!(
            message.contains("_PGR_MERGES") && message.contains("does not exist"),
            "merge the landing tables: {message}"
        );
    }
}

/// Runs the first two statements of every recorded merge, as a merge
/// interrupted before it cleared the landing tables would have.
pub(crate) async fn interrupted_merge(client: &mut SnowflakeClient) {
    let recorded = rows(
        client,
        "SELECT BOUND_SQL, EMPTY_SQL, MERGE_SQL FROM _PGR_MERGES",
    )
    .await
    .unwrap();
    for row in recorded {
        let text = |i: usize| row[i].clone().unwrap();
        let bound = rows(client, &text(0)).await.unwrap();
        let Some(last) = bound.first() else {
            continue;
        };
        let (lsn, seq) = (last[0].clone().unwrap(), last[1].clone().unwrap());
        for sql in [text(1), text(2)] {
            let sql = sql.replace(":bound_lsn", &lsn).replace(":bound_seq", &seq);
            rows(client, &sql).await.unwrap();
        }
    }
}

/// A Postgres table, its Snowflake table, and how their columns compare.
pub(crate) type Compared<'a> = (&'a str, &'a str, &'a [(&'a str, Kind)]);

/// Merges until every `(postgres, snowflake, columns)` table is equal
/// (at most 90 s); panics saying how they differ, or how the pipeline
/// ended.
pub(crate) async fn merge_until_equal(
    db: &TestDb,
    client: &mut SnowflakeClient,
    running: Running,
    database: &str,
    tables: &[Compared<'_>],
) -> Running {
    let started = Instant::now();
    loop {
        merge(database).await;
        let mut differences = Vec::new();
        for (pg, sf, spec) in tables {
            match both_sides(db, client, pg, sf, spec).await {
                Ok((expected, actual)) if expected == actual => {}
                Ok((expected, actual)) => differences.push(format!(
                    "{sf}: {} rows in Postgres, {} in Snowflake, missing {:?}, extra {:?}",
                    expected.len(),
                    actual.len(),
                    expected
                        .iter()
                        .filter(|r| !actual.contains(r))
                        .take(3)
                        .collect::<Vec<_>>(),
                    actual
                        .iter()
                        .filter(|r| !expected.contains(r))
                        .take(3)
                        .collect::<Vec<_>>()
                )),
                Err(error) => differences.push(error),
            }
        }
        if differences.is_empty() {
            return running;
        }
        if started.elapsed() > Duration::from_secs(90) || running.handle.is_finished() {
            let outcome = running.stop().await;
            panic!("the merged tables did not converge: {differences:?}; the pipeline ended with {outcome:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn assert_equal(
    db: &TestDb,
    client: &mut SnowflakeClient,
    pg_table: &str,
    sf_table: &str,
    spec: &[(&str, Kind)],
) {
    let (expected, actual) = both_sides(db, client, pg_table, sf_table, spec)
        .await
        .unwrap();
    assert_eq!(actual, expected, "{sf_table} differs from {pg_table}");
}

async fn count(client: &mut SnowflakeClient, table: &str) -> i64 {
    rows(client, &format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

async fn items_and_log(name: &str) -> (TestDb, String, String) {
    let db = fresh_database(name).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    // EXTERNAL storage keeps `big` out of line uncompressed, so updates
    // that do not touch it send it as unchanged TOAST.
    db.execute(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, v int, n numeric(12,2), t text, big text, j jsonb);
         ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE log (id bigint, note text); ALTER TABLE log REPLICA IDENTITY FULL;
         {}; CREATE PUBLICATION {publication} FOR TABLE items, log",
        insert_items(1..=40)
    ))
    .await;
    (db, publication, slot)
}

/// Changes landed over many batches in a landing schema of their own
/// merge into tables equal to Postgres, between merges and across a
/// truncate and a schema change.
#[tokio::test]
async fn changes_kept_in_landing_tables_merge_into_equal_tables() {
    let (db, publication, slot) = items_and_log("sf_kept").await;
    let database = db.name().to_uppercase();
    let identity = "kept";
    let sink = SnowflakeSink::connect(
        sink_config(&database, identity, MergeMode::External).with_landing_schema("landing"),
    )
    .await
    .unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    let mut client = client(&database).await;
    let running = copied(&mut client, running).await;
    assert_equal(&db, &mut client, "items", "ITEMS", ITEMS).await;
    let (items_landing, log_landing) = ("LANDING.LANDING_ITEMS", "LANDING.LANDING_LOG");

    // Rows that exist only in the landing table, then updates leaving
    // their TOASTed column unchanged and moving their keys.
    db.execute(&format!(
        "{}; UPDATE items SET v = -v WHERE id % 3 = 0; UPDATE items SET id = id + 1000 WHERE id IN (7, 14);
         DELETE FROM items WHERE id % 5 = 1;",
        insert_items(41..=60)
    ))
    .await;
    land(&db, &mut client, &running, log_landing, identity, 1).await;
    assert_eq!(
        count(&mut client, "ITEMS").await,
        40,
        "the target changed before a merge"
    );
    db.execute(
        "UPDATE items SET v = 100 + id WHERE id BETWEEN 41 AND 50; UPDATE items SET id = id + 2000 WHERE id IN (45, 46);
         UPDATE items SET t = 'moved' WHERE id = 2045;",
    )
    .await;
    land(&db, &mut client, &running, log_landing, identity, 2).await;
    assert!(count(&mut client, items_landing).await > 0);
    assert_eq!(merge(&database).await, 2);
    assert_equal(&db, &mut client, "items", "ITEMS", ITEMS).await;
    assert_equal(&db, &mut client, "log", "LOG", LOG).await;
    assert_eq!(count(&mut client, items_landing).await, 0);
    assert_eq!(merge(&database).await, 0, "a merge found changes twice");

    // Unchanged TOAST values of rows only in the target; then a truncate
    // between changes of one transaction, and changes after it.
    db.execute("UPDATE items SET t = 'after' WHERE id BETWEEN 41 AND 44;")
        .await;
    land(&db, &mut client, &running, log_landing, identity, 3).await;
    db.execute(&format!(
        "BEGIN; UPDATE items SET v = 0; TRUNCATE items; {}; UPDATE items SET v = 7 WHERE id = 61; COMMIT;",
        insert_items(61..=70)
    ))
    .await;
    land(&db, &mut client, &running, log_landing, identity, 4).await;
    db.execute("UPDATE items SET n = n + 1 WHERE id > 65; DELETE FROM items WHERE id = 62;")
        .await;
    land(&db, &mut client, &running, log_landing, identity, 5).await;
    merge(&database).await;
    assert_equal(&db, &mut client, "items", "ITEMS", ITEMS).await;

    // Columns added and dropped with changes before and after, unmerged.
    db.execute(
        "UPDATE items SET v = 1 WHERE id = 63; ALTER TABLE items ADD COLUMN extra numeric(8,3);
         UPDATE items SET extra = id / 4.0 WHERE id < 66; ALTER TABLE items DROP COLUMN v;
         UPDATE items SET extra = -1 WHERE id = 70; INSERT INTO items (id, t, big) VALUES (71, 'new', 'b');",
    )
    .await;
    land(&db, &mut client, &running, log_landing, identity, 6).await;
    merge(&database).await;
    let mut evolved: Vec<(&str, Kind)> = ITEMS.iter().copied().filter(|(c, _)| *c != "v").collect();
    evolved.push(("extra", Kind::Decimal));
    assert_equal(&db, &mut client, "items", "ITEMS", &evolved).await;
    assert_equal(&db, &mut client, "log", "LOG", LOG).await;

    stop_checked(running).await;
    assert_confirmed_not_ahead(&db, &mut client, &slot, identity).await;
}

/// Stops `running`, which must not have failed.
async fn stop_checked(running: Running) {
    let outcome = running.stop().await;
    assert!(outcome.is_ok(), "the pipeline failed: {outcome:?}");
}

/// Changes left unmerged in the landing table stop an inline sink with an
/// error saying what to do; once merged, the inline sink goes on.
#[tokio::test]
async fn the_inline_mode_refuses_a_landing_table_with_unmerged_changes() {
    let (db, publication, slot) = items_and_log("sf_switch").await;
    let database = db.name().to_uppercase();
    let identity = "switch";
    let sink = SnowflakeSink::connect(sink_config(&database, identity, MergeMode::External))
        .await
        .unwrap();
    let running = start_with(&db, &publication, &slot, sink, PipelineAction::Both);
    let mut client = client(&database).await;
    let running = copied(&mut client, running).await;
    db.execute("UPDATE items SET v = 0 WHERE id < 10").await;
    land(&db, &mut client, &running, "LANDING_LOG", identity, 1).await;
    stop_checked(running).await;

    let inline = SnowflakeSink::connect(sink_config(&database, identity, MergeMode::Inline))
        .await
        .unwrap();
    let refused = start_with(&db, &publication, &slot, inline, PipelineAction::Both);
    let outcome = tokio::time::timeout(Duration::from_secs(60), refused.handle)
        .await
        .expect("the inline pipeline neither failed nor stopped within 60 s")
        .expect("the pipeline task panicked");
    let error = outcome.expect_err("the inline sink dropped unmerged changes");
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(error.to_string().contains("not merged yet"), "{error}");

    assert_eq!(merge(&database).await, 2);
    assert_equal(&db, &mut client, "items", "ITEMS", ITEMS).await;
    let inline = SnowflakeSink::connect(sink_config(&database, identity, MergeMode::Inline))
        .await
        .unwrap();
    let running = start_with(&db, &publication, &slot, inline, PipelineAction::Both);
    db.execute("UPDATE items SET v = 1 WHERE id > 30").await;
    let started = Instant::now();
    loop {
        let sides = both_sides(&db, &mut client, "items", "ITEMS", ITEMS).await;
        if sides.as_ref().is_ok_and(|(e, a)| e == a) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && !running.handle.is_finished(),
            "the inline sink did not converge after the merge: {sides:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop_checked(running).await;
}
