//! The BigQuery sink against the real `local-bigquery` emulator: the type
//! matrix value for value through backfill and CDC, schema changes and
//! truncates, restarts that resume exactly once, and clear errors.

use std::time::Duration;

use pg_replicate::pipeline::PipelineAction;
use pg_replicate::sinks::bigquery::{
    schema, BackfillMethod, BigQueryCredentials, BigQuerySink, BigQuerySinkConfig, RetryPolicy,
    StagingMethod,
};
use pg_replicate::types::Lsn;
use pg_replicate::ErrorKind;

use crate::bigquery_common::*;
use crate::common::{confirmed_flush, start_with, Running};
use crate::support::{fresh_database, TestDb};

const TYPES: &[(&str, Kind)] = &[
    ("id", Kind::Text),
    ("b", Kind::Text),
    ("i2", Kind::Text),
    ("i8", Kind::Text),
    ("f4", Kind::Float),
    ("f8", Kind::Float),
    ("n", Kind::Decimal),
    ("nu", Kind::Text),
    ("t", Kind::Text),
    ("by", Kind::Bytea),
    ("d", Kind::Text),
    ("tm", Kind::Time),
    ("ts", Kind::Timestamp),
    ("tz", Kind::Timestamp),
    ("iv", Kind::Interval),
    ("u", Kind::Text),
    ("j", Kind::Json),
    ("ia", Kind::Array),
    ("ta", Kind::Array),
    ("big", Kind::Md5),
];

/// How the BigQuery tests compare each column of the shared type matrix
/// ([`crate::types::COLUMNS`]).
fn matrix_kind(column: &str) -> Kind {
    match column {
        "c_float4" | "c_float8" => Kind::Float,
        "c_numeric_12_2" => Kind::Decimal,
        "c_bpchar" => Kind::Bpchar,
        "c_bytea" => Kind::Bytea,
        "c_time" => Kind::Time,
        "c_ts" | "c_tstz" => Kind::Timestamp,
        "c_interval" => Kind::Interval,
        "c_json" | "c_jsonb" => Kind::Json,
        "c_tstz_arr" => Kind::TimestamptzArray,
        "c_jsonb_arr" => Kind::JsonArray,
        c if c.ends_with("_arr") => Kind::Array,
        _ => Kind::Text,
    }
}

const CREATE_TYPES: &str = "CREATE TABLE types (
    id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(20,6),
    nu numeric, t text, by bytea, d date, tm time, ts timestamp, tz timestamptz, iv interval,
    u uuid, j jsonb, ia int[], ta text[], big text)";

fn type_row(id: i64) -> String {
    format!(
        "({id}, {b}, {i2}, {i8}, {f4}, {f8}, {n}, {nu}, {t}, {by}, {d}, {tm}, {ts}, {tz}, {iv}, {u}, {j}, \
         {ia}, {ta}, repeat('x', 3000) || {id})",
        b = ["true", "false", "NULL"][id as usize % 3],
        i2 = ["-32768", "32767", "NULL", "0"][id as usize % 4],
        i8 = ["-9223372036854775808", "9223372036854775807", "NULL"][id as usize % 3],
        f4 = ["1.5", "'NaN'", "'-Infinity'", "-0.1", "NULL"][id as usize % 5],
        f8 = ["0.1", "'Infinity'", "2.2250738585072014e-308", "NULL", "-1e300"][id as usize % 5],
        n = ["12345678901234.123456", "-0.000001", "NULL", "100"][id as usize % 4],
        nu = ["123456789012345678901234567890.123456789012345", "'NaN'", "NULL"][id as usize % 3],
        t = ["'plain'", "'quo''te \"and\" \\ back'", "NULL", "'ünïcødé 😀'"][id as usize % 4],
        by = ["'\\x00ff10'::bytea", "''::bytea", "NULL"][id as usize % 3],
        d = ["'0001-01-01'", "'9999-12-31'", "'2024-02-29'", "NULL"][id as usize % 4],
        tm = ["'00:00:00'", "'23:59:59.999999'", "'12:34:56.5'", "NULL"][id as usize % 4],
        ts = ["'0001-01-01 00:00:00'", "'9999-12-31 23:59:59.999999'", "'2024-01-02 03:04:05.678901'", "NULL"]
            [id as usize % 4],
        tz = ["'2024-01-02 03:04:05.678901+02'", "'1970-01-01 00:00:00+00'", "NULL"][id as usize % 3],
        iv = ["'1 year 2 mons 3 days 04:05:06.5'", "'-1 hours'", "'0'", "NULL"][id as usize % 4],
        u = ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "NULL"][id as usize % 2],
        j = ["'{\"a\": [1, null, \"x\"], \"b\": {\"c\": true}}'", "'[]'", "'\"s\"'", "NULL"][id as usize % 4],
        ia = ["'{1,NULL,3}'", "'{}'", "NULL"][id as usize % 3],
        ta = ["'{a,NULL,\"b c\"}'", "NULL"][id as usize % 2],
    )
}

fn insert_types(ids: std::ops::RangeInclusive<i64>) -> String {
    let rows: Vec<String> = ids.map(type_row).collect();
    format!("INSERT INTO types VALUES {}", rows.join(", "))
}

fn start_bq(db: &TestDb, publication: &str, slot: &str, sink: BigQuerySink) -> Running {
    start_with(db, publication, slot, sink, PipelineAction::Both)
}

async fn assert_confirmed_not_ahead(db: &TestDb, dataset: &Dataset, slot: &str, identity: &str) {
    let stored = dataset
        .stored_lsn(identity)
        .await
        .unwrap_or_else(|e| panic!("a stored LSN: {e}"));
    if let Some(confirmed) = confirmed_flush(db, slot).await {
        assert!(
            confirmed <= Lsn(stored),
            "confirmed {confirmed} is ahead of stored {}",
            Lsn(stored)
        );
    }
}

#[tokio::test]
async fn types_changes_truncates_and_schema_changes_converge() {
    let db = fresh_database("bq_types").await;
    let dataset = Dataset::new(&db).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    let identity = format!("{publication}/{slot}");
    db.execute(&format!(
        "{CREATE_TYPES}; {}; CREATE PUBLICATION {publication} FOR TABLE types",
        insert_types(1..=40)
    ))
    .await;
    let sink = BigQuerySink::connect(dataset.config(&identity))
        .await
        .unwrap();
    let running = start_bq(&db, &publication, &slot, sink);
    wait_copied(&dataset, 1).await;
    wait_converged(&db, &dataset, "types", "public_types", TYPES).await;

    // Inserts, updates that leave the TOASTed column unchanged, key
    // updates, deletes, in one transaction and across several.
    db.execute(&format!(
        "BEGIN; {}; UPDATE types SET t = 'upd' || id, f8 = id WHERE id % 3 = 0;
         UPDATE types SET id = id + 1000 WHERE id % 7 = 0; DELETE FROM types WHERE id % 5 = 1; COMMIT;
         UPDATE types SET n = n + 1 WHERE id < 20; DELETE FROM types WHERE id = 2; {};",
        insert_types(41..=60),
        insert_types(2..=2)
    ))
    .await;
    wait_converged(&db, &dataset, "types", "public_types", TYPES).await;

    // A truncate between changes of one transaction.
    db.execute(&format!(
        "BEGIN; UPDATE types SET b = NOT b; TRUNCATE types; {}; UPDATE types SET i2 = 7 WHERE id = 61; COMMIT;",
        insert_types(61..=70)
    ))
    .await;
    wait_converged(&db, &dataset, "types", "public_types", TYPES).await;

    // Columns added and dropped while changes flow.
    db.execute(
        "ALTER TABLE types ADD COLUMN extra numeric(8,3); UPDATE types SET extra = id / 4.0 WHERE id < 66;
         ALTER TABLE types DROP COLUMN i2; UPDATE types SET extra = -1 WHERE id = 70;",
    )
    .await;
    let mut evolved: Vec<(&str, Kind)> =
        TYPES.iter().copied().filter(|(c, _)| *c != "i2").collect();
    evolved.push(("extra", Kind::Decimal));
    wait_converged(&db, &dataset, "types", "public_types", &evolved).await;

    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &dataset, &slot, &identity).await;
}

const WORK: &[(&str, Kind)] = &[("id", Kind::Text), ("v", Kind::Text), ("doc", Kind::Text)];
const LOG: &[(&str, Kind)] = &[("host", Kind::Text), ("n", Kind::Text)];

fn workload(round: u64) -> String {
    let mut sql = String::from("BEGIN;");
    for i in 0..30 {
        let x = round * 1000 + i;
        sql.push_str(&match (x * 7919) % 6 {
            0 | 1 => format!("INSERT INTO work VALUES ({x}, {i}, 'd{x}') ON CONFLICT (id) DO UPDATE SET v = work.v + 1;"),
            2 => format!("UPDATE work SET v = v * 2 WHERE id % 11 = {};", x % 11),
            3 => format!("DELETE FROM work WHERE id % 13 = {};", x % 13),
            4 => format!("UPDATE work SET id = id + 100000 WHERE id = {};", x / 3),
            _ => format!("INSERT INTO log VALUES ('h{}', {x});", x % 4),
        });
    }
    sql.push_str("COMMIT;");
    sql
}

/// Every type of the shared matrix ([`crate::types::COLUMNS`]), typical
/// values and NULLs, through the copy and through the stream, value for
/// value against Postgres.
#[tokio::test]
async fn every_type_of_the_matrix_is_exact_through_copy_and_stream() {
    let db = fresh_database("bq_matrix").await;
    let dataset = Dataset::new(&db).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    let identity = format!("{publication}/{slot}");
    crate::types::set_up(&db, &publication).await;
    let typical = |id: u32| crate::types::TYPICAL.replacen("(1,", &format!("({id},"), 1);
    let nulls = |id: u32| format!("({id}{})", ", NULL".repeat(crate::types::COLUMNS.len()));
    db.execute(&format!(
        "INSERT INTO all_types VALUES {}, {}",
        typical(1),
        nulls(2)
    ))
    .await;
    let mut spec: Vec<(&str, Kind)> = vec![("id", Kind::Text)];
    spec.extend(
        crate::types::COLUMNS
            .iter()
            .map(|(c, _)| (*c, matrix_kind(c))),
    );
    let sink = BigQuerySink::connect(dataset.config(&identity))
        .await
        .unwrap();
    let running = start_bq(&db, &publication, &slot, sink);
    wait_copied(&dataset, 1).await;
    wait_converged(&db, &dataset, "all_types", "public_all_types", &spec).await;
    // The same values through the stream: inserted, then a row turned
    // from NULLs into values and back.
    db.execute(&format!(
        "INSERT INTO all_types VALUES {}, {};
         DELETE FROM all_types WHERE id = 2; INSERT INTO all_types VALUES {};
         UPDATE all_types SET id = 7 WHERE id = 1;",
        typical(5),
        nulls(6),
        typical(2)
    ))
    .await;
    wait_converged(&db, &dataset, "all_types", "public_all_types", &spec).await;
    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &dataset, &slot, &identity).await;
}

/// Two copies of one table by two sinks of one identity, as by a killed
/// process whose last requests arrive late and by its restart: only the
/// copy that started last is kept, and the other one fails.
#[tokio::test]
async fn a_copy_superseded_by_a_later_one_changes_nothing() {
    use std::sync::Arc;

    use arrow::array::{Int32Array, RecordBatch, StringArray};
    use pg_replicate::sinks::Sink;
    use pg_replicate::types::change::table_arrow_schema;
    use pg_replicate::types::{
        ColumnSchema, PgType, ReplicaIdentity, TableId, TableName, TableSchema,
    };

    let db = fresh_database("bq_fence").await;
    let dataset = Dataset::new(&db).await;
    let identity = "pub/slot";
    let column = |name: &str, oid: u32, type_name: &str, identity: bool| ColumnSchema {
        name: name.into(),
        pg_type: PgType {
            oid,
            modifier: -1,
            name: type_name.into(),
            element_oid: None,
        },
        nullable: !identity,
        identity,
        array_form: pg_replicate::types::ArrayForm::Lists,
    };
    let table = Arc::new(TableSchema {
        id: TableId(4242),
        name: TableName::new("public", "fenced"),
        columns: vec![
            column("id", 23, "integer", true),
            column("v", 25, "text", false),
        ],
        replica_identity: ReplicaIdentity::Default,
    });
    let rows = |n: i32, v: &str| {
        RecordBatch::try_new(
            table_arrow_schema(&table),
            vec![
                Arc::new(Int32Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values((0..n).map(|_| v))),
            ],
        )
        .unwrap()
    };
    let config = || {
        dataset
            .config(identity)
            .with_backfill(BackfillMethod::StorageWrite)
    };
    let mut late = BigQuerySink::connect(config()).await.unwrap();
    let mut next = BigQuerySink::connect(config()).await.unwrap();
    late.write_table_schemas(std::slice::from_ref(&table))
        .await
        .unwrap();
    late.begin_table_copy(&table).await.unwrap();
    late.write_table_rows(&table, rows(100, "late"))
        .await
        .unwrap();
    let late_token = dataset
        .try_query(&format!(
            "SELECT copy_token FROM {} WHERE table_id = 4242",
            dataset.table("_pg_replicate_copying")
        ))
        .await
        .unwrap()[0][0]
        .clone()
        .expect("the copy in progress has a token");
    // Statements fenced by the token of the copy in progress run.
    let fenced = |table: &TableSchema, statement: String| {
        schema::fenced_copy_sql(&dataset.id, identity, table, &late_token, &[statement])
    };
    dataset
        .try_query(&fenced(&table, "SELECT 1".into()))
        .await
        .expect("a statement fenced by the current copy runs");
    next.write_table_schemas(std::slice::from_ref(&table))
        .await
        .unwrap();
    next.begin_table_copy(&table).await.unwrap();
    next.write_table_rows(&table, rows(60, "next"))
        .await
        .unwrap();
    next.end_table_copy(&table, Lsn(200)).await.unwrap();
    assert!(
        late.end_table_copy(&table, Lsn(100)).await.is_err(),
        "the superseded copy ended without an error"
    );
    // The superseded copy re-creating the table for a changed column type,
    // as a killed process's request run late would: refused, the newer
    // copy's rows stay.
    let mut retyped = (*table).clone();
    retyped.columns[1] = column("v", 20, "bigint", false);
    let error = dataset
        .try_query(&fenced(
            &retyped,
            schema::create_target_sql(&dataset.id, &retyped, true),
        ))
        .await
        .expect_err("a late re-creation of the table was not fenced");
    assert!(error.contains(schema::COPY_SUPERSEDED), "{error}");
    let stored = dataset
        .try_query(&format!(
            "SELECT v, COUNT(*) FROM {} GROUP BY v",
            dataset.table("public_fenced")
        ))
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![vec![Some("next".to_owned()), Some("60".to_owned())]]
    );
    let state = next.resumption_state().await.unwrap();
    assert_eq!(state.copied_tables.get(&TableId(4242)), Some(&Lsn(200)));
}

/// Tables `work` (keyed, `work_rows` rows with a long text) and `log`
/// (no key, insert-only), and a publication of both.
async fn create_work_and_log(db: &TestDb, publication: &str, work_rows: u64) {
    db.execute(&format!(
        "CREATE TABLE work (id bigint PRIMARY KEY, v bigint, doc text);
         CREATE TABLE log (host text, n bigint);
         ALTER TABLE log REPLICA IDENTITY FULL;
         INSERT INTO work SELECT g, g, repeat('d', 2500) || g FROM generate_series(1, {work_rows}) g;
         INSERT INTO log SELECT 'h' || g % 3, g FROM generate_series(1, 500) g;
         CREATE PUBLICATION {publication} FOR TABLE work, log"
    ))
    .await;
}

async fn restart_trial(staging: StagingMethod, backfill: BackfillMethod, name: &str) {
    let db = fresh_database(name).await;
    let dataset = Dataset::new(&db).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    let identity = format!("{publication}/{slot}");
    create_work_and_log(&db, &publication, 3000).await;
    let config = || {
        dataset
            .config(&identity)
            .with_staging(staging)
            .with_backfill(backfill)
    };
    // The pipeline is aborted (dropped at whatever it awaits) several times
    // while changes keep coming; each restart resumes from the stored state.
    for round in 0..4u64 {
        let sink = BigQuerySink::connect(config()).await.unwrap();
        let running = start_bq(&db, &publication, &slot, sink);
        db.execute(&workload(round)).await;
        tokio::time::sleep(Duration::from_millis(300 + 400 * round)).await;
        running.handle.abort();
        let _ = running.handle.await;
        crate::common::wait_slot_inactive(&db, &slot).await;
    }
    let sink = BigQuerySink::connect(config()).await.unwrap();
    let running = start_bq(&db, &publication, &slot, sink);
    db.execute(&workload(9)).await;
    let started = std::time::Instant::now();
    while dataset.copied().await < 2 {
        if running.handle.is_finished() {
            panic!("the pipeline stopped: {:?}", running.handle.await);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for the backfill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_converged(&db, &dataset, "work", "public_work", WORK).await;
    wait_converged(&db, &dataset, "log", "public_log", LOG).await;
    // The last copy may have taken every change so far: one more
    // transaction, which only the stream can bring, gives a stored LSN.
    db.execute(&workload(10)).await;
    wait_converged(&db, &dataset, "work", "public_work", WORK).await;
    wait_converged(&db, &dataset, "log", "public_log", LOG).await;
    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &dataset, &slot, &identity).await;
}

#[tokio::test]
async fn restarts_resume_exactly_once_with_storage_write_staging() {
    restart_trial(
        StagingMethod::StorageWrite,
        BackfillMethod::LoadJob,
        "bq_restart_sw",
    )
    .await;
}

#[tokio::test]
async fn restarts_resume_exactly_once_with_load_job_staging() {
    restart_trial(
        StagingMethod::LoadJob,
        BackfillMethod::StorageWrite,
        "bq_restart_lj",
    )
    .await;
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    }
}

#[tokio::test]
async fn a_missing_dataset_is_named() {
    let emulator = emulator();
    let config = BigQuerySinkConfig::new(PROJECT, "no_such_dataset", BigQueryCredentials::None)
        .with_endpoints(emulator.rest_endpoint(), emulator.storage_endpoint())
        .with_retry(quick_retry());
    let error = BigQuerySink::connect(config).await.err().expect("an error");
    assert!(
        error.to_string().contains("no_such_dataset") && error.to_string().contains("create"),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_key_file_is_named() {
    let dir = std::env::temp_dir().join(format!("pgr-bq-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.json");
    let garbled = dir.join("garbled.json");
    std::fs::write(
        &garbled,
        "{\"type\": \"service_account\", \"private_key\": \"not a key\"}",
    )
    .unwrap();
    for path in [&missing, &garbled] {
        let config = BigQuerySinkConfig::new(
            PROJECT,
            "ds",
            BigQueryCredentials::ServiceAccountKeyFile(path.clone()),
        )
        .with_endpoints(emulator().rest_endpoint(), emulator().storage_endpoint());
        let error = BigQuerySink::connect(config).await.err().expect("an error");
        assert!(
            matches!(error.kind(), ErrorKind::Authentication | ErrorKind::Config),
            "{error}"
        );
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        assert!(
            !error.to_string().contains("not a key"),
            "key material in {error}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = BigQuerySinkConfig::new(PROJECT, "ds", BigQueryCredentials::None)
        .with_endpoints(&url, &url)
        .with_retry(quick_retry());
    let error = BigQuerySink::connect(config).await.err().expect("an error");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}

#[tokio::test]
async fn a_value_bigquery_cannot_hold_names_table_and_column() {
    let db = fresh_database("bq_rejected").await;
    let dataset = Dataset::new(&db).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    db.execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO events VALUES (1, now()), (2, '10000-01-01 12:34:56.789+00');
         CREATE PUBLICATION {publication} FOR TABLE events"
    ))
    .await;
    let sink = BigQuerySink::connect(dataset.config("x")).await.unwrap();
    let running = start_bq(&db, &publication, &slot, sink);
    let error = tokio::time::timeout(Duration::from_secs(60), running.handle)
        .await
        .expect("the pipeline stops")
        .unwrap()
        .expect_err("an error");
    let text = error.to_string();
    assert!(
        text.contains("public.events") && text.contains("at"),
        "{text}"
    );
    assert_eq!(error.kind(), ErrorKind::Data, "{text}");
    assert!(!text.contains("12:34:56"), "row value in {text}");
    assert_eq!(dataset.copied().await, 0);
}

const CHILD_ENV: &str = "PGR_BIGQUERY_KILL_CHILD";

/// Replicates into BigQuery until killed: the process the kill test
/// starts (this test binary again), configured through `CHILD_ENV`.
#[tokio::test]
#[ignore = "started as a child process by killed_at_any_point_converges_exactly_once"]
async fn killed_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_owned();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(text("log"))
        .unwrap();
    tracing_subscriber::fmt()
        .with_env_filter("pg_replicate=debug")
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    // The parent's server and emulator, not ones of this process.
    let config = crate::common::child_pg_config(&spec);
    let sink = BigQuerySink::connect(
        BigQuerySinkConfig::new(PROJECT, text("dataset"), BigQueryCredentials::None)
            .with_endpoints(text("rest"), text("grpc"))
            .with_identity(text("identity")),
    )
    .await
    .unwrap();
    let source = pg_replicate::sources::postgres::PostgresSource::new(
        config,
        text("publication"),
        text("slot"),
    );
    pg_replicate::pipeline::DataPipeline::new(source, sink, PipelineAction::Both)
        .with_batch_config(crate::common::test_batch_config())
        .start()
        .await
        .unwrap();
}

fn spawn_child(
    db: &TestDb,
    dataset: &Dataset,
    publication: &str,
    slot: &str,
) -> std::process::Child {
    let spec = crate::common::child_spec(
        db,
        publication,
        slot,
        serde_json::json!({
            "identity": format!("{publication}/{slot}"),
            "dataset": dataset.id,
            "rest": emulator().rest_endpoint(),
            "grpc": emulator().storage_endpoint(),
            "log": crate::common::child_log("bq", slot),
        }),
    );
    crate::common::spawn_child_test("bigquery::killed_child_process", CHILD_ENV, &spec)
}

#[tokio::test]
async fn killed_at_any_point_converges_exactly_once() {
    let db = fresh_database("bq_kill").await;
    let dataset = Dataset::new(&db).await;
    let (publication, slot) = (db.unique_name("pub"), db.unique_name("slot"));
    let identity = format!("{publication}/{slot}");
    let _log = crate::common::ChildLog(crate::common::child_log("bq", &slot));
    create_work_and_log(&db, &publication, 20000).await;
    // `kill -9` early (slot creation, backfill), then during CDC while
    // changes keep coming; after each, the slot is not ahead of the dataset.
    let mut round = 0;
    for wait_ms in [300u64, 1500, 3000, 2000, 4000, 2500, 1200, 3500] {
        let mut child = spawn_child(&db, &dataset, &publication, &slot);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(wait_ms) {
            db.execute(&workload(round)).await;
            round += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Restarted at once: the killed process's last script may still be
        // running, and commit after the next process has read the state.
        crate::common::wait_slot_inactive(&db, &slot).await;
        if let (Some(confirmed), Ok(stored)) = (
            confirmed_flush(&db, &slot).await,
            dataset.stored_lsn(&identity).await,
        ) {
            assert!(
                confirmed <= Lsn(stored),
                "slot confirmed {confirmed} but the dataset stored only {}",
                Lsn(stored)
            );
        }
    }
    // A last run in this process catches up, with one more transaction
    // that only the stream can bring.
    let sink = BigQuerySink::connect(dataset.config(&identity))
        .await
        .unwrap();
    let running = start_bq(&db, &publication, &slot, sink);
    wait_copied(&dataset, 2).await;
    db.execute(&workload(round)).await;
    for (pg_table, bq_table, spec) in [("work", "public_work", WORK), ("log", "public_log", LOG)] {
        if let Err(error) = try_wait_converged(&db, &dataset, pg_table, bq_table, spec).await {
            let state = dataset
                .try_query(&format!(
                    "SELECT * FROM {}",
                    dataset.table("_pg_replicate_state")
                ))
                .await;
            let copied = dataset
                .try_query(&format!(
                    "SELECT * FROM {}",
                    dataset.table("_pg_replicate_copied")
                ))
                .await;
            panic!("{error}\nstate: {state:?}\ncopied tables: {copied:?}");
        }
    }
    running.stop().await.unwrap();
    assert_confirmed_not_ahead(&db, &dataset, &slot, &identity).await;
}
