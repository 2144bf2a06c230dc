//! The backfill streamed into the current-state table: failures inside
//! DuckDB's scan, batches of another shape and copies without rows leave
//! the table and its copy record as they were, or as they should be; a
//! first copy adds the key after its rows, a copy into a table the user
//! added to keeps what they added.

use super::*;

/// A sink on `file` with `t`'s table created, not copied.
async fn sink_with_table(file: &TempFile, t: &Arc<TableSchema>) -> DuckDbSink {
    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    sink.write_table_schemas(std::slice::from_ref(t))
        .await
        .unwrap();
    sink
}

/// A sink on `file` with `t`'s table, copied once with `ids` at LSN 10.
async fn sink_with_copy(file: &TempFile, t: &Arc<TableSchema>, ids: &[i32]) -> DuckDbSink {
    let mut sink = sink_with_table(file, t).await;
    copied(&mut sink, t, ids, 10).await;
    sink
}

/// The snapshot LSN the sink records for `t`'s finished copy.
async fn copied_at(sink: &mut DuckDbSink, t: &TableSchema) -> Option<Lsn> {
    let state = sink.resumption_state().await.unwrap();
    state.copied_tables.get(&t.id).copied()
}

/// One whole copy of `t` with `ids` (no batch when `ids` is empty).
async fn copied(sink: &mut DuckDbSink, t: &Arc<TableSchema>, ids: &[i32], lsn: u64) {
    sink.begin_table_copy(t).await.unwrap();
    if !ids.is_empty() {
        sink.write_table_rows(t, copy_rows(t, ids)).await.unwrap();
    }
    sink.end_table_copy(t, Lsn(lsn)).await.unwrap();
}

#[tokio::test]
async fn a_copy_that_duckdb_refuses_stores_nothing() {
    let file = TempFile::new("streamed-refused");
    let t = table(41, "refused", false);
    let mut sink = sink_with_copy(&file, &t, &[1, 2]).await;
    let reader = sink.reader().unwrap();

    // A duplicate key fails DuckDB's INSERT: the error comes out of the
    // copy, and the earlier copy and its record stay.
    sink.begin_table_copy(&t).await.unwrap();
    sink.write_table_rows(&t, copy_rows(&t, &[5, 5])).await.ok();
    let error = sink
        .end_table_copy(&t, Lsn(20))
        .await
        .expect_err("duplicate keys cannot be stored");
    let text = format!("{error:#}");
    assert!(
        text.contains("insert the copied rows of public.refused") && text.contains("rolled back"),
        "{text}"
    );
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.refused").len(),
        2
    );
    assert_eq!(copied_at(&mut sink, &t).await, Some(Lsn(10)));

    // The sink goes on: the next copy replaces the table.
    copied(&mut sink, &t, &[7], 30).await;
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.refused"),
        vec![(Some(7), Some(7), Some("x".into()))]
    );
}

#[tokio::test]
async fn a_batch_of_another_shape_is_refused_before_duckdb_reads_it() {
    let file = TempFile::new("streamed-shape");
    let t = table(42, "shape", false);
    let mut sink = sink_with_copy(&file, &t, &[1]).await;

    // Same column count, other types: DuckDB would misread the buffers.
    let other = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", DataType::Int64, true),
            arrow::datatypes::Field::new("v", DataType::Int32, true),
            arrow::datatypes::Field::new("t", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(arrow::array::Int64Array::from(vec![2i64])) as ArrayRef,
            Arc::new(Int32Array::from(vec![2])),
            Arc::new(StringArray::from(vec!["y"])),
        ],
    )
    .unwrap();
    sink.begin_table_copy(&t).await.unwrap();
    let error = sink
        .write_table_rows(&t, other)
        .await
        .expect_err("another schema");
    assert!(
        error
            .to_string()
            .contains("does not have the table's Arrow schema"),
        "{error}"
    );
    drop(sink);

    let mut sink = DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap();
    let reader = sink.reader().unwrap();
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.shape"),
        vec![(Some(1), Some(1), Some("x".into()))]
    );
    assert_eq!(copied_at(&mut sink, &t).await, Some(Lsn(10)));
}

#[tokio::test]
async fn a_copy_without_rows_empties_the_table_and_records_it() {
    let file = TempFile::new("streamed-empty");
    let t = table(43, "emptied", false);
    let mut sink = sink_with_copy(&file, &t, &[1, 2, 3]).await;
    copied(&mut sink, &t, &[], 20).await;
    let reader = sink.reader().unwrap();
    assert!(rows(&reader, "SELECT id, v, t FROM public.emptied").is_empty());
    assert_eq!(copied_at(&mut sink, &t).await, Some(Lsn(20)));
    // No helper database is left attached for readers to see.
    let attached: i64 = reader
        .connection()
        .query_row(
            "SELECT count(*) FROM duckdb_databases() WHERE database_name LIKE '_pg_replicate%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attached, 0);
}

/// The primary key columns DuckDB reports for `public.<name>`.
fn key_of(reader: &DuckDbReader, name: &str) -> Vec<String> {
    reader
        .connection()
        .prepare(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
             WHERE constraint_type = 'PRIMARY KEY' AND schema_name = 'public' AND table_name = ?",
        )
        .unwrap()
        .query_map([name], |r| r.get(0))
        .unwrap()
        .collect::<duckdb::Result<_>>()
        .unwrap()
}

/// The settings the key's commit changes while it runs, as `reader`'s
/// database has them and as a fresh database has them.
fn checkpoint_settings(reader: &DuckDbReader) -> (Vec<String>, Vec<String>) {
    let sql = "SELECT current_setting('checkpoint_threshold')::VARCHAR, \
               current_setting('auto_checkpoint_skip_wal_threshold')::VARCHAR";
    let read = |conn: &duckdb::Connection| -> Vec<String> {
        conn.query_row(sql, [], |r| Ok(vec![r.get(0)?, r.get(1)?]))
            .unwrap()
    };
    let fresh = duckdb::Connection::open_in_memory().unwrap();
    (read(reader.connection()), read(&fresh))
}

/// Bytes in the file's WAL (none when DuckDB removed it).
fn wal_bytes(file: &TempFile) -> u64 {
    std::fs::metadata(file.0.with_extension("duckdb.wal")).map_or(0, |m| m.len())
}

#[tokio::test]
async fn a_first_copy_adds_the_key_after_its_rows() {
    let file = TempFile::new("streamed-key-after");
    let t = table(44, "key_after", false);
    let mut sink = sink_with_copy(&file, &t, &[3, 1, 2]).await;
    let reader = sink.reader().unwrap();
    assert_eq!(key_of(&reader, "key_after"), vec!["id".to_owned()]);
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.key_after ORDER BY id"),
        [1, 2, 3].map(|i| (Some(i), Some(i), Some("x".to_owned())))
    );
    assert_eq!(copied_at(&mut sink, &t).await, Some(Lsn(10)));
    // The key is enforced after the copy.
    let duplicate = reader
        .connection()
        .execute("INSERT INTO public.key_after VALUES (1, 9, 'y')", []);
    assert!(duplicate.is_err(), "a duplicate key was stored");
    // The key's commit checkpointed the file (its index is not written
    // twice, through the WAL first) and put DuckDB's settings back.
    assert_eq!(wal_bytes(&file), 0, "the key's commit went through the WAL");
    let (settings, defaults) = checkpoint_settings(&reader);
    assert_eq!(settings, defaults);
}

#[tokio::test]
async fn a_first_copy_whose_key_fails_is_not_recorded_and_is_copied_again() {
    let file = TempFile::new("streamed-key-fails");
    let t = table(45, "key_fails", false);
    let mut sink = sink_with_table(&file, &t).await;
    // Rows DuckDB takes but its key refuses: the rows are committed
    // before the key is added, so the key's transaction fails.
    sink.begin_table_copy(&t).await.unwrap();
    sink.write_table_rows(&t, copy_rows(&t, &[5, 5]))
        .await
        .unwrap();
    let error = sink
        .end_table_copy(&t, Lsn(20))
        .await
        .expect_err("duplicate keys cannot get a primary key");
    let text = format!("{error:#}");
    assert!(
        text.contains("primary key of public.key_fails") && text.contains("not recorded as copied"),
        "{text}"
    );
    assert_eq!(copied_at(&mut sink, &t).await, None);
    let (settings, defaults) = checkpoint_settings(&sink.reader().unwrap());
    assert_eq!(
        settings, defaults,
        "a failed key left DuckDB's checkpoint settings changed"
    );
    drop(sink);

    // As after a crash between the two transactions: the restart finds
    // the rows without key, unrecorded, and copies the table again.
    let mut sink = sink_with_table(&file, &t).await;
    copied(&mut sink, &t, &[1, 2], 30).await;
    let reader = sink.reader().unwrap();
    assert_eq!(
        rows(&reader, "SELECT id, v, t FROM public.key_fails ORDER BY id"),
        [1, 2].map(|i| (Some(i), Some(i), Some("x".to_owned())))
    );
    assert_eq!(key_of(&reader, "key_fails"), vec!["id".to_owned()]);
    assert_eq!(copied_at(&mut sink, &t).await, Some(Lsn(30)));
}

#[tokio::test]
async fn a_copy_keeps_the_index_and_comment_a_user_added() {
    let file = TempFile::new("streamed-user-index");
    let t = table(46, "user_index", false);
    let mut sink = sink_with_table(&file, &t).await;
    let reader = sink.reader().unwrap();
    reader
        .connection()
        .execute_batch(
            "CREATE INDEX user_v ON public.user_index (v); \
             COMMENT ON TABLE public.user_index IS 'mine';",
        )
        .unwrap();
    copied(&mut sink, &t, &[1, 2], 10).await;
    let kept: (i64, Option<String>) = reader
        .connection()
        .query_row(
            "SELECT (SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'user_v'), \
                    (SELECT comment FROM duckdb_tables() WHERE table_name = 'user_index')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kept, (1, Some("mine".to_owned())));
    assert_eq!(key_of(&reader, "user_index"), vec!["id".to_owned()]);
    assert_eq!(
        rows(
            &reader,
            "SELECT id, v, t FROM public.user_index ORDER BY id"
        )
        .len(),
        2
    );
}
