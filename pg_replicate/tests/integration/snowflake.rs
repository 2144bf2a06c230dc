//! The Snowflake client against the real `fakesnow` emulator (installed by
//! `scripts/emulators/snowflake`, started on a free port of 127.0.0.1 once
//! per test process, stopped when it ends): bound values of every type
//! round trip, results as Arrow and JSON, and errors that name the cause.
//! `PG_REPLICATE_SNOWFLAKE_VENV` names an installed environment to skip
//! the install check.

use std::sync::OnceLock;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use pg_replicate::sinks::snowflake::{
    Binding, BindingType, LocalSnowflake, QueryResult, ResultRows, SnowflakeClient,
    SnowflakeConfig, SnowflakeCredentials,
};
use pg_replicate::ErrorKind;

/// The emulator of this test process, started on first use.
pub fn emulator() -> &'static LocalSnowflake {
    static EMULATOR: OnceLock<LocalSnowflake> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        LocalSnowflake::start(&crate::common::emulator_venv(
            "PG_REPLICATE_SNOWFLAKE_VENV",
            "snowflake",
        ))
        .unwrap_or_else(|e| panic!("fakesnow: {e}"))
    })
}

/// A client of its own database on the emulator.
async fn client(database: &str) -> SnowflakeClient {
    let config = SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::Password("unused by the emulator".into()),
    )
    .with_base_url(emulator().url())
    .with_database(database)
    .with_schema("public");
    SnowflakeClient::connect(config)
        .await
        .unwrap_or_else(|e| panic!("log in to fakesnow: {e}"))
}

/// Every cell of an Arrow result as text, row by row.
fn text_rows(result: &QueryResult) -> Vec<Vec<Option<String>>> {
    let ResultRows::Arrow(batches) = &result.rows else {
        panic!("a SELECT answers Arrow: {:?}", result.rows)
    };
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    rows
}

#[tokio::test]
async fn bound_values_of_every_type_round_trip() {
    let mut client = client("bindings").await;
    client
        .query(
            "CREATE TABLE t (i NUMBER(38,0), n NUMBER(10,2), s VARCHAR, d DATE, ts TIMESTAMP_NTZ, \
             bin BINARY, b BOOLEAN, r FLOAT, tm TIME)",
            &[],
        )
        .await
        .unwrap();
    let row = |i: i64, n: &str, s: &str, days: i32, nanos: i64, bytes: &[u8], b: bool, r: f64| {
        vec![
            Binding::Fixed(i),
            Binding::Text(n.into()),
            Binding::Text(s.into()),
            Binding::Date(days),
            Binding::TimestampNtz(nanos),
            Binding::Binary(bytes.to_vec()),
            Binding::Boolean(b),
            Binding::Real(r),
            Binding::Time(nanos.rem_euclid(86_400_000_000_000)),
        ]
    };
    let insert = "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let inserted = client
        .query(
            insert,
            &row(
                1,
                "1234.56",
                "quote ' and é",
                19_782,
                1_709_213_110_500_000_000,
                &[0, 0xFF],
                true,
                2.5,
            ),
        )
        .await
        .unwrap();
    // DML answers a JSON rowset: the number of rows inserted.
    let ResultRows::Json(counts) = &inserted.rows else {
        panic!("an INSERT answers JSON: {:?}", inserted.rows)
    };
    assert_eq!(counts, &vec![vec![Some("1".to_owned())]]);
    let nulls: Vec<Binding> = [
        BindingType::Fixed,
        BindingType::Text,
        BindingType::Text,
        BindingType::Date,
        BindingType::TimestampNtz,
        BindingType::Binary,
        BindingType::Boolean,
        BindingType::Real,
        BindingType::Time,
    ]
    .into_iter()
    .map(Binding::Null)
    .collect();
    let mut with_key = nulls.clone();
    with_key[0] = Binding::Fixed(2);
    client.query(insert, &with_key).await.unwrap();
    // Many rows in one request.
    let many = vec![
        row(3, "-0.01", "", -1, -1_000_000_000, &[], false, -0.5),
        row(4, "99999999.99", "x", 0, 0, &[1], true, 1e300),
    ];
    let inserted = client.query_rows(insert, &many).await.unwrap();
    assert_eq!(inserted.row_count(), 1);

    // The timestamps apart: fakesnow answers a NULL TIMESTAMP_NTZ with
    // NULLs inside the non-nullable fields of Snowflake's timestamp struct,
    // an Arrow batch that does not validate.
    let timestamps = client
        .query("SELECT i, ts FROM t WHERE ts IS NOT NULL ORDER BY i", &[])
        .await
        .unwrap();
    let text = |v: &str| Some(v.to_owned());
    assert_eq!(
        text_rows(&timestamps),
        [
            [text("1"), text("{epoch: 1709213110, fraction: 500000000}")],
            [text("3"), text("{epoch: -1, fraction: 0}")],
            [text("4"), text("{epoch: 0, fraction: 0}")],
        ]
    );
    let selected = client
        .query(
            "SELECT i, n, s, d, bin, b, r, tm FROM t WHERE i >= ? ORDER BY i",
            &[Binding::Fixed(1)],
        )
        .await
        .unwrap();
    let names: Vec<&str> = selected.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["I", "N", "S", "D", "BIN", "B", "R", "TM"]);
    assert_eq!(selected.columns[1].type_name, "fixed");
    assert_eq!(selected.columns[1].scale, Some(2));
    let rows: Vec<Vec<Option<String>>> = text_rows(&selected);
    let expected = |values: [&str; 8]| -> Vec<Option<String>> { values.map(text).to_vec() };
    let mut null_row = vec![None; 8];
    null_row[0] = text("2");
    // NUMBER(10,2) as a decimal, DATE as a date, BINARY as hex, TIME as
    // nanoseconds since midnight (Snowflake's Arrow forms).
    assert_eq!(
        rows,
        [
            expected([
                "1",
                "1234.56",
                "quote ' and é",
                "2024-02-29",
                "00ff",
                "true",
                "2.5",
                "48310500000000"
            ]),
            null_row,
            expected([
                "3",
                "-0.01",
                "",
                "1969-12-31",
                "",
                "false",
                "-0.5",
                "86399000000000"
            ]),
            expected([
                "4",
                "99999999.99",
                "x",
                "1970-01-01",
                "01",
                "true",
                "1e300",
                "0"
            ]),
        ]
    );
}

#[tokio::test]
async fn errors_name_the_cause() {
    let mut client = client("errors").await;
    let error = client
        .query("SELECT * FROM missing_table", &[])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Sink);
    let text = error.to_string();
    assert!(
        text.contains("002003") && text.contains("MISSING_TABLE"),
        "{text}"
    );

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::Password("pa55word-never-shown".into()),
    )
    .with_base_url(format!("http://127.0.0.1:{port}/"));
    let error = SnowflakeClient::connect(config).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection);
    let text = error.to_string();
    assert!(
        text.contains(&format!("http://127.0.0.1:{port} cannot be reached")),
        "{text}"
    );
    assert!(!text.contains("pa55word"), "{text}");

    // A key that is not a key fails before any request, without its text.
    let config = SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::KeyPair {
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
                .into(),
            passphrase: None,
        },
    )
    .with_base_url(emulator().url());
    let error = SnowflakeClient::connect(config).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.to_string().contains("not a usable RSA key"),
        "{error}"
    );
    assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
}

#[tokio::test]
async fn an_encrypted_key_pair_logs_in() {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};

    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("generate an RSA key");
    let pem = key
        .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, "phrase-of-the-test", LineEnding::LF)
        .unwrap()
        .to_string();
    let dir = std::env::temp_dir().join(format!("pgr-snowflake-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rsa_key.p8");
    std::fs::write(&path, &pem).unwrap();
    let config = |passphrase: &str| {
        SnowflakeConfig::new(
            "xy12345.us-east-1",
            "loader",
            SnowflakeCredentials::key_pair_file(&path, Some(passphrase.to_owned())).unwrap(),
        )
        .with_base_url(emulator().url())
        .with_database("keypair")
    };
    let mut client = SnowflakeClient::connect(config("phrase-of-the-test"))
        .await
        .expect("log in with the key");
    let answer = client
        .query("SELECT 1 + ?", &[Binding::Fixed(41)])
        .await
        .unwrap();
    assert_eq!(text_rows(&answer), [[Some("42".to_owned())]]);
    assert!(!format!("{client:?}").contains("phrase"));

    let error = SnowflakeClient::connect(config("another phrase"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("passphrase is wrong"), "{error}");
    assert!(!error.to_string().contains("another phrase"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A front of the emulator on a port of its own: it answers the first
/// `failures` connections with HTTP 503 and forwards the others; returns
/// its URL and the count of connections it took.
async fn flaky_front(failures: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = emulator().url().trim_start_matches("http://").to_owned();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if n < failures {
                    let mut request = [0u8; 4096];
                    let _ = client.read(&mut request).await;
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = client.shutdown().await;
                } else if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, seen)
}

/// Requests answered HTTP 503 are sent again after a pause, the login and
/// queries alike, until one gets through; when none does within the
/// attempts allowed, the error says how many were made.
#[tokio::test]
async fn transient_http_errors_are_retried() {
    let (url, seen) = flaky_front(3).await;
    let config = SnowflakeConfig::new(
        "testacct",
        "loader",
        SnowflakeCredentials::Password("unused by the emulator".into()),
    )
    .with_base_url(&url)
    .with_database("retries");
    let mut client = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        SnowflakeClient::connect(config.clone()),
    )
    .await
    .expect("the login did not end in 30 s")
    .expect("the login gets through on its fourth attempt");
    let answer = client
        .query("SELECT 1 + ?", &[Binding::Fixed(1)])
        .await
        .unwrap();
    assert_eq!(text_rows(&answer), [[Some("2".to_owned())]]);
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "three connections were refused first"
    );

    let (url, _) = flaky_front(100).await;
    let error = SnowflakeClient::connect(config.with_base_url(&url).with_request_attempts(2))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Sink, "{error}");
    assert!(
        error.to_string().contains("after 2 attempts") && error.to_string().contains("503"),
        "{error}"
    );
}
