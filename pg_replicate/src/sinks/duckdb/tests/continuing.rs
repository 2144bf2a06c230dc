//! Transactions spread over several batches, and the DuckDB settings of
//! the sink.

use super::*;

fn insert(k: i32) -> Change {
    Change {
        op: ChangeOp::Insert,
        new: Some((Some(k), Some(k), None)),
        toast: false,
        old: None,
    }
}

fn continuing(events: Vec<CdcEvent>, handed_out: u64) -> CdcBatch {
    CdcBatch {
        continues: true,
        ..cdc(events, handed_out)
    }
}

#[tokio::test]
async fn a_transaction_over_several_batches_is_committed_with_its_last_batch() {
    let file = TempFile::new("continuing");
    let t = table(31, "continuing", false);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(&t))
        .await
        .unwrap();
    let reader = sink.reader().unwrap();
    let count =
        |reader: &DuckDbReader| rows(reader, "SELECT id, v, t FROM public.continuing").len();
    sink.write_cdc_batch(cdc(vec![changes_event(&t, &[insert(1)], 10)], 11))
        .await
        .unwrap();

    // Two parts of one transaction: nothing new is durable or visible.
    for part in [2, 3] {
        let durable = sink
            .write_cdc_batch(continuing(vec![changes_event(&t, &[insert(part)], 20)], 11))
            .await
            .unwrap();
        assert_eq!(durable, Lsn(11));
        assert_eq!(count(&reader), 1, "part {part} is not committed yet");
        assert_eq!(
            sink.resumption_state().await.unwrap().last_lsn,
            Some(Lsn(11))
        );
    }
    // The last part commits everything with the transaction's end.
    let durable = sink
        .write_cdc_batch(cdc(vec![changes_event(&t, &[insert(4)], 20)], 21))
        .await
        .unwrap();
    assert_eq!(durable, Lsn(21));
    assert_eq!(count(&reader), 4);

    // A transaction whose last batch never comes leaves nothing behind.
    sink.write_cdc_batch(continuing(vec![changes_event(&t, &[insert(5)], 30)], 21))
        .await
        .unwrap();
    drop(sink);
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    assert_eq!(
        sink.resumption_state().await.unwrap().last_lsn,
        Some(Lsn(21))
    );
    assert_eq!(count(&sink.reader().unwrap()), 4);
}

#[tokio::test]
async fn the_memory_limit_is_applied_and_a_bad_one_refused() {
    let file = TempFile::new("memory_limit");
    let setting = |sink: &DuckDbSink| -> String {
        sink.reader()
            .unwrap()
            .connection()
            .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
            .unwrap()
    };
    let default = setting(&DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap());
    let limited =
        DuckDbSink::open(DuckDbSinkConfig::new(&file.0).with_memory_limit("100MB")).unwrap();
    let limit = setting(&limited);
    assert_ne!(limit, default);
    assert!(limit.contains("MiB") || limit.contains("MB"), "{limit}");
    drop(limited);

    let error = DuckDbSink::open(DuckDbSinkConfig::new(&file.0).with_memory_limit("plenty"))
        .err()
        .expect("an invalid memory limit is refused");
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("memory_limit"), "{error}");
}
