//! [`StdoutSink`]: JSON Lines on standard output (or any writer).

use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{UInt32Type, UInt64Type, UInt8Type};
use async_trait::async_trait;

use super::json::{write_str, write_value};
use crate::sinks::Sink;
use crate::types::change::{
    is_unchanged, CdcBatch, CdcEvent, ChangeOp, ResumptionState, TableChanges, COMMIT_LSN_COLUMN,
    OLD_COLUMN, OP_COLUMN, SEQUENCE_COLUMN, UNCHANGED_COLUMN,
};
use crate::types::{Lsn, ReplicaIdentity, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Prints rows and changes as JSON Lines, one object per row or change:
///
/// ```text
/// {"op":"copy","table":"public.t","row":{"id":1,"name":"a"}}
/// {"op":"insert","table":"public.t","lsn":"0/16B3748","seq":0,"row":{"id":2,"name":"b"}}
/// {"op":"update","table":"public.t","lsn":"0/16B3900","seq":0,"row":{"id":2},"unchanged":["name"],"old":{"id":1}}
/// {"op":"delete","table":"public.t","lsn":"0/16B3A10","seq":0,"old":{"id":2}}
/// {"op":"truncate","table":"public.t","lsn":"0/16B3B00","cascade":false,"restart_identity":false}
/// {"op":"schema","table":"public.t","columns":[{"name":"id","type":"integer","nullable":false,"identity":true}]}
/// {"op":"message","lsn":"0/16B3C00","transactional":true,"prefix":"p","content":"text"}
/// ```
///
/// `lsn` is the transaction's commit LSN and `seq` the change's position in
/// its transaction. Columns whose unchanged TOAST value Postgres did not send
/// are left out of `row` and listed in `unchanged`. `old` holds the old row
/// (replica identity FULL) or only the identity columns. Values follow
/// [`super::json`]. Lines are flushed at the end of every batch; nothing is
/// kept between runs, so a restarted pipeline prints every table again.
pub struct StdoutSink<W: Write + Send = std::io::Stdout> {
    out: W,
    line: Vec<u8>,
}

impl StdoutSink {
    /// A sink printing to standard output.
    pub fn new() -> Self {
        Self::with_writer(std::io::stdout())
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Write + Send> StdoutSink<W> {
    /// A sink printing to `out` (a file, a buffer).
    pub fn with_writer(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(4096),
        }
    }

    /// The writer, for example to read what a test captured.
    pub fn writer(&self) -> &W {
        &self.out
    }

    /// The writer, mutably, for example to drain a buffer.
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn emit(&mut self) -> Result<()> {
        self.line.push(b'\n');
        let written = self.out.write_all(&self.line);
        self.line.clear();
        written.map_err(write_error)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(write_error)
    }

    fn start_line(&mut self, op: &str, table: &TableSchema) {
        self.line.extend_from_slice(b"{\"op\":\"");
        self.line.extend_from_slice(op.as_bytes());
        self.line.extend_from_slice(b"\",\"table\":");
        write_str(&mut self.line, &table.name.to_string());
    }

    fn write_lsn(&mut self, lsn: Lsn) {
        self.line.extend_from_slice(b",\"lsn\":\"");
        self.line.extend_from_slice(lsn.to_string().as_bytes());
        self.line.push(b'"');
    }

    fn write_changes(&mut self, changes: &[&TableChanges]) -> Result<()> {
        // Rows of several tables between two other events: print them in
        // commit order, (commit LSN, sequence).
        let mut order: Vec<(u64, u32, usize, usize)> = Vec::new();
        for (index, change) in changes.iter().enumerate() {
            let batch = &change.batch;
            let lsns = column(batch, COMMIT_LSN_COLUMN)?.as_primitive::<UInt64Type>();
            let seqs = column(batch, SEQUENCE_COLUMN)?.as_primitive::<UInt32Type>();
            for row in 0..batch.num_rows() {
                order.push((lsns.value(row), seqs.value(row), index, row));
            }
        }
        order.sort_unstable();
        for (lsn, seq, index, row) in order {
            self.write_change(changes[index], Lsn(lsn), seq, row)?;
        }
        Ok(())
    }

    fn write_change(
        &mut self,
        change: &TableChanges,
        lsn: Lsn,
        seq: u32,
        row: usize,
    ) -> Result<()> {
        let batch = &change.batch;
        let table = &change.table;
        let op = column(batch, OP_COLUMN)?
            .as_primitive::<UInt8Type>()
            .value(row);
        let op = ChangeOp::from_code(op).ok_or_else(|| {
            Error::new(
                ErrorKind::Sink,
                format!("change batch of {} has unknown operation {op}", table.name),
            )
        })?;
        self.start_line(op.as_str(), table);
        self.write_lsn(lsn);
        self.line.extend_from_slice(b",\"seq\":");
        self.line
            .extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());

        let unchanged = column(batch, UNCHANGED_COLUMN)?.as_binary::<i32>();
        let bitmap = (!unchanged.is_null(row)).then(|| unchanged.value(row));
        let schema = batch.schema();
        if op != ChangeOp::Delete {
            self.line.extend_from_slice(b",\"row\":");
            let columns = batch.columns();
            let table_columns = table.columns.len();
            write_object(&mut self.line, schema.fields(), columns, row, |i| {
                i < table_columns && !bitmap.is_some_and(|b| is_unchanged(b, i))
            });
            if let Some(bitmap) = bitmap {
                self.line.extend_from_slice(b",\"unchanged\":[");
                let names = table
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| is_unchanged(bitmap, *i));
                for (n, (_, c)) in names.enumerate() {
                    if n > 0 {
                        self.line.push(b',');
                    }
                    write_str(&mut self.line, &c.name);
                }
                self.line.push(b']');
            }
        }
        let old = column(batch, OLD_COLUMN)?.as_struct();
        if !old.is_null(row) {
            let key_only = table.replica_identity != ReplicaIdentity::Full;
            self.line.extend_from_slice(b",\"old\":");
            write_object(&mut self.line, old.fields(), old.columns(), row, |i| {
                !key_only || table.columns.get(i).is_some_and(|c| c.identity)
            });
        }
        self.line.push(b'}');
        self.emit()
    }
}

/// Writes row `row` of `columns` as a JSON object, keeping the columns
/// `include` accepts (by index; the fields name the table's columns first).
fn write_object(
    out: &mut Vec<u8>,
    fields: &arrow::datatypes::Fields,
    columns: &[arrow::array::ArrayRef],
    row: usize,
    include: impl Fn(usize) -> bool,
) {
    out.push(b'{');
    let mut first = true;
    for (i, (field, column)) in fields.iter().zip(columns).enumerate() {
        if !include(i) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, field.name());
        out.push(b':');
        write_value(out, field, column.as_ref(), row);
    }
    out.push(b'}');
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::new(
            ErrorKind::Sink,
            format!("change batch lacks the {name} column"),
        )
    })
}

fn write_error(error: std::io::Error) -> Error {
    Error::with_source(ErrorKind::Sink, "could not write to the output", error)
}

#[async_trait]
impl<W: Write + Send> Sink for StdoutSink<W> {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        Ok(ResumptionState::default())
    }

    async fn write_table_schemas(&mut self, _tables: &[Arc<TableSchema>]) -> Result<()> {
        Ok(())
    }

    async fn begin_table_copy(&mut self, _table: &Arc<TableSchema>) -> Result<()> {
        Ok(())
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        let schema = rows.schema();
        for row in 0..rows.num_rows() {
            self.start_line("copy", table);
            self.line.extend_from_slice(b",\"row\":");
            write_object(&mut self.line, schema.fields(), rows.columns(), row, |_| {
                true
            });
            self.line.push(b'}');
            self.emit()?;
        }
        Ok(())
    }

    async fn end_table_copy(
        &mut self,
        _table: &Arc<TableSchema>,
        _snapshot_lsn: Lsn,
    ) -> Result<()> {
        self.flush()
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        let mut group: Vec<&TableChanges> = Vec::new();
        for event in &batch.events {
            if let CdcEvent::Changes(changes) = event {
                group.push(changes);
                continue;
            }
            self.write_changes(&group)?;
            group.clear();
            match event {
                CdcEvent::Changes(_) => {}
                CdcEvent::Truncate {
                    tables,
                    cascade,
                    restart_identity,
                    commit_lsn,
                } => {
                    for table in tables {
                        self.start_line("truncate", table);
                        self.write_lsn(*commit_lsn);
                        self.line.extend_from_slice(
                            format!(
                                ",\"cascade\":{cascade},\"restart_identity\":{restart_identity}}}"
                            )
                            .as_bytes(),
                        );
                        self.emit()?;
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    self.start_line("schema", new);
                    self.line.extend_from_slice(b",\"columns\":[");
                    for (i, c) in new.columns.iter().enumerate() {
                        if i > 0 {
                            self.line.push(b',');
                        }
                        self.line.extend_from_slice(b"{\"name\":");
                        write_str(&mut self.line, &c.name);
                        self.line.extend_from_slice(b",\"type\":");
                        write_str(&mut self.line, &c.pg_type.name);
                        self.line.extend_from_slice(
                            format!(",\"nullable\":{},\"identity\":{}}}", c.nullable, c.identity)
                                .as_bytes(),
                        );
                    }
                    self.line.extend_from_slice(b"]}");
                    self.emit()?;
                }
                CdcEvent::Message {
                    transactional,
                    lsn,
                    prefix,
                    content,
                } => {
                    self.line.extend_from_slice(b"{\"op\":\"message\"");
                    self.write_lsn(*lsn);
                    self.line.extend_from_slice(
                        format!(",\"transactional\":{transactional},\"prefix\":").as_bytes(),
                    );
                    write_str(&mut self.line, prefix);
                    match std::str::from_utf8(content) {
                        Ok(text) => {
                            self.line.extend_from_slice(b",\"content\":");
                            write_str(&mut self.line, text);
                        }
                        Err(_) => {
                            self.line.extend_from_slice(b",\"content_hex\":\"");
                            for b in content.iter() {
                                self.line.extend_from_slice(format!("{b:02x}").as_bytes());
                            }
                            self.line.push(b'"');
                        }
                    }
                    self.line.push(b'}');
                    self.emit()?;
                }
            }
        }
        self.write_changes(&group)?;
        self.flush()?;
        Ok(batch.end_lsn)
    }
}
