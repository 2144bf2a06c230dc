//! The replication connection and the ordinary query connection against a
//! real server: authentication methods, TLS modes, error kinds and messages,
//! replication commands, streaming, feedback and cancel safety.

use std::time::Duration;

use pg_replicate::postgres::client::connect_query_client;
use pg_replicate::postgres::replication::{
    CopyClient, ReplicationClient, ReplicationMessage, ReplicationStream,
};
use pg_replicate::postgres::throwaway::ThrowawayRole;
use pg_replicate::postgres::{PgConnectionConfig, SslMode};
use pg_replicate::types::Lsn;
use pg_replicate::ErrorKind;

use crate::support::{self, TestDb};

/// Longest wait for something the server should send promptly.
const WAIT: Duration = Duration::from_secs(30);

async fn connect(config: &PgConnectionConfig) -> ReplicationClient {
    ReplicationClient::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect as {} failed: {e}", config.username))
}

/// The next XLogData (skipping keepalives), as (wal_start, first byte of
/// the pgoutput message).
async fn next_xlog(stream: &mut ReplicationStream) -> (Lsn, u8) {
    loop {
        let message = tokio::time::timeout(WAIT, stream.next_message())
            .await
            .expect("no message from the server in time")
            .expect("stream failed")
            .expect("stream ended");
        if let ReplicationMessage::XLogData {
            wal_start, data, ..
        } = message
        {
            return (wal_start, data[0]);
        }
    }
}

/// A table `t` in a publication; returns (slot, publication) names.
async fn published_table(db: &TestDb) -> (String, String) {
    let slot = db.unique_name("slot");
    let publication = db.unique_name("pub");
    db.execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION {publication} FOR TABLE t"
    ))
    .await;
    (slot, publication)
}

#[tokio::test]
async fn every_auth_method_connects_and_identifies() {
    let pg = support::cluster();
    if !pg.auth_roles_available("every_auth_method_connects_and_identifies") {
        return;
    }
    let db = support::fresh_database("repl_auth_methods").await;
    for role in ThrowawayRole::ALL {
        for mode in [SslMode::Disable, SslMode::Prefer] {
            let mut config = db.config_as(role.name());
            config.ssl_mode = mode;
            let mut client = connect(&config).await;
            assert_eq!(
                client.is_tls(),
                mode == SslMode::Prefer && pg.ca_cert_path().is_some()
            );
            let system = client.identify_system().await.unwrap();
            assert_eq!(system.dbname.as_deref(), Some(db.name()));
            assert!(system.timeline >= 1);
            assert!(system.xlogpos > Lsn::ZERO);
            assert!(client.server_version_num().unwrap() >= 100_000);
            assert!(client.backend_pid().is_some());
            client.close().await;
        }
    }
}

#[tokio::test]
async fn wrong_or_missing_password_is_reported_without_the_password() {
    let pg = support::cluster();
    if !pg.auth_roles_available("wrong_or_missing_password") {
        return;
    }
    let db = support::fresh_database("repl_wrong_password").await;
    for role in [
        ThrowawayRole::Md5,
        ThrowawayRole::Password,
        ThrowawayRole::Scram,
    ] {
        let mut config = db.config_as(role.name());
        config.password = Some("not-the-password-4711".to_owned());
        let err = ReplicationClient::connect(&config).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Authentication,
            "{}: {err}",
            role.name()
        );
        let text = format!("{err} {err:?}");
        assert!(
            text.contains(&format!(
                "password authentication failed for user \"{}\"",
                role.name()
            )),
            "{text}"
        );
        assert!(
            text.contains("28P01") && text.contains("pg_hba.conf"),
            "{text}"
        );
        assert!(!text.contains("4711"), "password leaked: {text}");

        let err = connect_query_client(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert!(!format!("{err} {err:?}").contains("4711"));

        config.password = None;
        let err = ReplicationClient::connect(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.message().contains("none is configured"), "{err}");
        let err = connect_query_client(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
}

#[tokio::test]
async fn startup_errors_have_kinds_and_hints() {
    let db = support::fresh_database("repl_startup_errors").await;

    let mut config = db.config();
    config.dbname = "no_such_db_here".to_owned();
    for err in [
        ReplicationClient::connect(&config).await.unwrap_err(),
        connect_query_client(&config).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err
            .message()
            .contains("database \"no_such_db_here\" does not exist"));
        assert!(err.message().contains("3D000"));
    }

    // A role without REPLICATION.
    let role = db.unique_name("norepl");
    db.execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw_norepl'"))
        .await;
    let mut config = db.config_as(&role);
    config.password = Some("pw_norepl".to_owned());
    let err = ReplicationClient::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceSetup, "{err}");
    assert!(err.message().contains("WITH REPLICATION"), "{err}");
    assert!(err.message().contains("42501"), "{err}");
    // The ordinary connection does not need REPLICATION.
    connect_query_client(&config).await.unwrap();
    db.execute(&format!("DROP ROLE {role}")).await;

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = db.config();
    config.port = port;
    for err in [
        ReplicationClient::connect(&config).await.unwrap_err(),
        connect_query_client(&config).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert!(
            err.message().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn tls_modes_and_unix_socket() {
    let pg = support::cluster();
    let db = support::fresh_database("repl_tls_modes").await;
    let Some(ca) = pg.ca_cert_path() else {
        eprintln!("skipping tls_modes_and_unix_socket: no CA certificate known");
        return;
    };

    let mut config = db.config();
    config.ssl_mode = SslMode::Require;
    config.ssl_root_cert = None;
    assert!(connect(&config).await.is_tls());
    connect_query_client(&config).await.unwrap();

    config.ssl_mode = SslMode::VerifyFull;
    config.ssl_root_cert = Some(ca.to_owned());
    let mut client = connect(&config).await;
    assert!(client.is_tls());
    client.identify_system().await.unwrap();
    let query = connect_query_client(&config).await.unwrap();
    let row = query
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // The certificate names localhost and 127.0.0.1, and chains to the CA,
    // not to a web root.
    config.ssl_root_cert = None;
    for err in [
        ReplicationClient::connect(&config).await.unwrap_err(),
        connect_query_client(&config).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.message().contains("ssl_root_cert"), "{err}");
    }

    if let Some(cluster) = pg.throwaway() {
        let mut config = cluster.socket_connection_config(db.name(), "postgres");
        config.ssl_mode = SslMode::Require; // never TLS over a Unix socket
        let mut client = connect(&config).await;
        assert!(!client.is_tls());
        client.identify_system().await.unwrap();
        connect_query_client(&config).await.unwrap();
    }
}

/// Reads a whole `COPY … TO STDOUT` (text format) through `client`, one
/// CopyData payload at a time, breaking after every payload.
async fn copy_lines(client: &mut CopyClient, sql: &str) -> pg_replicate::Result<Vec<String>> {
    client.copy_out(sql).await?;
    let mut lines = Vec::new();
    while client
        .read_copy_data(|payload| {
            lines.push(String::from_utf8_lossy(payload).into_owned());
            Ok(std::ops::ControlFlow::Break(()))
        })
        .await?
        .is_some()
    {}
    Ok(lines)
}

#[tokio::test]
async fn copy_client_reads_copies_over_tls_and_stays_usable_after_errors() {
    let pg = support::cluster();
    let db = support::fresh_database("copy_client").await;
    db.execute(
        "CREATE TABLE t AS SELECT g AS id, repeat('x', g) AS v FROM generate_series(1, 3000) g",
    )
    .await;
    let mut config = db.config();
    if let Some(ca) = pg.ca_cert_path() {
        config.ssl_mode = SslMode::VerifyFull;
        config.ssl_root_cert = Some(ca.to_owned());
    }
    let mut client = CopyClient::connect(&config).await.unwrap();

    // Every row arrives, in order, whole (rows up to 3,000 bytes cross reads).
    let lines = copy_lines(
        &mut client,
        "COPY (SELECT id, v FROM t ORDER BY id) TO STDOUT",
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 3000);
    for (i, line) in lines.iter().enumerate() {
        let id = i + 1;
        assert_eq!(line, &format!("{id}\t{}\n", "x".repeat(id)));
    }

    // A failing COPY is a clear error and the session goes on.
    let error = copy_lines(&mut client, "COPY missing TO STDOUT")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
    client.execute("SELECT 1").await.unwrap();
    let ssl = copy_lines(
        &mut client,
        "COPY (SELECT ssl::text || ' ' || backend_type FROM pg_stat_ssl JOIN pg_stat_activity \
         USING (pid) WHERE pid = pg_backend_pid()) TO STDOUT",
    )
    .await
    .unwrap();
    let expected_tls = if config.ssl_mode == SslMode::VerifyFull {
        "true"
    } else {
        "false"
    };
    assert_eq!(ssl, [format!("{expected_tls} client backend\n")]);

    // An error in the middle of a copy (division by zero at row 2,000)
    // fails the read and leaves the session unusable, not half-read.
    let error = copy_lines(
        &mut client,
        "COPY (SELECT 1 / (2000 - g) FROM generate_series(1, 3000) g) TO STDOUT",
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("division by zero"), "{error}");
    let error = client.execute("SELECT 1").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection, "{error}");
    client.close().await;
}

#[tokio::test]
async fn session_settings_are_applied() {
    let db = support::fresh_database("repl_session_settings").await;
    let mut client = connect(&db.config()).await;
    // Replication connections run one command per query string.
    for (sql, expected) in [
        ("SHOW DateStyle", "ISO, YMD"),
        ("SHOW TimeZone", "UTC"),
        ("SELECT current_setting('application_name')", "pg_replicate"),
    ] {
        let rows = client.simple_query(sql).await.unwrap();
        assert_eq!(rows, vec![vec![Some(expected.to_owned())]], "{sql}");
    }
    let query = connect_query_client(&db.config()).await.unwrap();
    let row = query
        .query_one(
            "SELECT current_setting('IntervalStyle'), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "iso_8601");
    assert_eq!(row.get::<_, String>(1), "pg_replicate");
}

#[tokio::test]
async fn simple_query_errors_keep_the_connection_usable() {
    let db = support::fresh_database("repl_simple_query_errors").await;
    let mut client = connect(&db.config()).await;
    let err = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceSetup, "{err}");
    assert!(err.message().contains("no_such_table"), "{err}");
    assert!(err.message().contains("42P01"), "{err}");
    let rows = client.simple_query("SELECT 1, NULL::text").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".to_owned()), None]]);
    assert!(client.simple_query("").await.unwrap().is_empty());
}

#[tokio::test]
async fn slot_snapshot_and_stream_agree() {
    let db = support::fresh_database("repl_slot_snapshot_stream").await;
    let (slot, publication) = published_table(&db).await;
    db.execute("INSERT INTO t VALUES (1, 'before')").await;

    let mut client = connect(&db.config()).await;
    let created = client.create_logical_slot(&slot, false).await.unwrap();
    assert_eq!(created.slot_name, slot);
    assert!(created.consistent_point > Lsn::ZERO);
    db.execute("INSERT INTO t VALUES (2, 'after')").await;

    // The exported snapshot sees exactly the rows committed before the slot.
    let query = connect_query_client(&db.config()).await.unwrap();
    query
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{}'",
            created.snapshot_name
        ))
        .await
        .unwrap();
    let ids: Vec<i32> = query
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, vec![1]);
    query.batch_execute("COMMIT").await.unwrap();

    // The stream has exactly the rows committed after it: Begin, Relation,
    // Insert, Commit.
    let mut stream = client
        .start_replication(&slot, created.consistent_point, &publication, 1)
        .await
        .unwrap();
    let (first, tag) = next_xlog(&mut stream).await;
    assert_eq!(tag, b'B');
    assert!(first >= created.consistent_point);
    assert_eq!(next_xlog(&mut stream).await.1, b'R');
    assert_eq!(next_xlog(&mut stream).await.1, b'I');
    let (commit_lsn, tag) = next_xlog(&mut stream).await;
    assert_eq!(tag, b'C');

    // Feedback moves the slot; a requested reply comes back as keepalive.
    stream
        .send_status_update(commit_lsn, commit_lsn, commit_lsn, true)
        .await
        .unwrap();
    let keepalive = match tokio::time::timeout(WAIT, stream.next_message())
        .await
        .unwrap()
        .unwrap()
    {
        Some(ReplicationMessage::Keepalive { wal_end, .. }) => wal_end,
        other => panic!("expected a keepalive, got {other:?}"),
    };
    assert!(keepalive >= commit_lsn);
    let confirmed = wait_for(&db, &format!(
        "SELECT confirmed_flush_lsn >= '{commit_lsn}' FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ), "t")
    .await;
    assert!(confirmed);

    // finish() returns once the walsender is gone: the slot is free.
    stream.finish().await;
    assert_eq!(
        db.psql(&format!(
            "SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )),
        "f"
    );
}

/// Polls `sql` until it prints `expected` (true) or `WAIT` passes (false).
async fn wait_for(db: &TestDb, sql: &str, expected: &str) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if db.psql(sql) == expected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn next_message_is_cancel_safe() {
    let db = support::fresh_database("repl_cancel_safe").await;
    let (slot, publication) = published_table(&db).await;
    let mut client = connect(&db.config()).await;
    client.create_logical_slot(&slot, true).await.unwrap();
    let mut stream = client
        .start_replication(&slot, Lsn::ZERO, &publication, 1)
        .await
        .unwrap();
    const ROWS: usize = 300;
    db.execute(&format!(
        "INSERT INTO t SELECT g, repeat('x', g * 7) FROM generate_series(1, {ROWS}) g"
    ))
    .await;

    // A timer that fires often races every read; no message may be lost or
    // damaged.
    let mut inserts = 0;
    let mut timeouts = 0u64;
    let mut last_start = Lsn::ZERO;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ticker = tokio::time::interval(Duration::from_micros(200));
    while inserts < ROWS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {inserts} inserts"
        );
        tokio::select! {
            message = stream.next_message() => {
                if let Some(ReplicationMessage::XLogData { wal_start, data, .. }) = message.unwrap() {
                    if data[0] == b'I' {
                        // Relation messages carry wal_start 0/0; changes
                        // carry their own increasing position.
                        assert!(wal_start > last_start);
                        last_start = wal_start;
                        inserts += 1;
                        let (id, v) = insert_columns(&data);
                        assert_eq!(id, inserts.to_string());
                        assert_eq!(v.len(), inserts * 7);
                    }
                }
            }
            _ = ticker.tick() => timeouts += 1,
        }
    }
    assert!(timeouts > 0);
    stream.finish().await;
    // The slot was temporary: gone with the connection.
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )),
        "0"
    );
}

/// The two text columns of a pgoutput Insert message of `t`.
fn insert_columns(data: &[u8]) -> (String, String) {
    // 'I', relation id (4), 'N', column count (2), then per column 't',
    // length (4), text.
    assert_eq!(data[5], b'N');
    assert_eq!(u16::from_be_bytes([data[6], data[7]]), 2);
    let mut rest = &data[8..];
    let mut columns = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], b't');
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        columns.push(String::from_utf8(rest[5..5 + len].to_vec()).unwrap());
        rest = &rest[5 + len..];
    }
    assert!(rest.is_empty());
    let v = columns.pop().unwrap();
    (columns.pop().unwrap(), v)
}

#[tokio::test]
async fn replication_setup_errors() {
    let db = support::fresh_database("repl_setup_errors").await;
    let (slot, publication) = published_table(&db).await;

    // Missing slot.
    let client = connect(&db.config()).await;
    let err = client
        .start_replication("no_such_slot", Lsn::ZERO, &publication, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceSetup, "{err}");
    assert!(
        err.message().contains("42704") && err.message().contains("create the slot"),
        "{err}"
    );

    // Duplicate slot; the connection survives the error.
    let mut client = connect(&db.config()).await;
    client.create_logical_slot(&slot, false).await.unwrap();
    let err = client.create_logical_slot(&slot, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceSetup, "{err}");
    assert!(err.message().contains("42710"), "{err}");

    // Slot in use by another connection: the message names its PID.
    let pid = client.backend_pid().unwrap();
    let _busy = client
        .start_replication(&slot, Lsn::ZERO, &publication, 1)
        .await
        .unwrap();
    let err = connect(&db.config())
        .await
        .start_replication(&slot, Lsn::ZERO, &publication, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.message().contains("55006"), "{err}");
    assert!(err.message().contains(&format!("PID {pid}")), "{err}");

    // Missing publication: reported once the first change is decoded.
    let other_slot = db.unique_name("slot");
    let mut client = connect(&db.config()).await;
    client.create_logical_slot(&other_slot, true).await.unwrap();
    let mut stream = client
        .start_replication(&other_slot, Lsn::ZERO, "no_such_publication", 1)
        .await
        .unwrap();
    db.execute("INSERT INTO t VALUES (1, 'x')").await;
    let err = loop {
        match tokio::time::timeout(WAIT, stream.next_message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::SourceSetup, "{err}");
    assert!(err.message().contains("CREATE PUBLICATION"), "{err}");
    assert!(err.message().contains("no_such_publication"), "{err}");
}
