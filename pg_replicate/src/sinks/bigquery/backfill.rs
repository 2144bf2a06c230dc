//! The sink's side of a table's backfill: a copy goes into a table of its
//! own (see [`super::copy`]), and its rows move into the target table in
//! the transaction that records the table as copied, fenced by the copy's
//! token so that requests of a killed process arriving late change nothing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use tracing::{info, warn};

use super::config::BackfillMethod;
use super::copy::{drain, parquet_error, parquet_writer, Copy, CopyWriter};
use super::encoder::encode_rows;
use super::errors::random_id;
use super::proto;
use super::schema::{
    bigquery_type, copy_table_name, create_copy_table_sql, create_target_sql, fenced_copy_sql,
    qualified, target_name, COPY_SUPERSEDED,
};
use super::sink::BigQuerySink;
use super::state::{finish_copy_sql, select_copy_tokens_sql, start_copy_sql, COPY_ROWS_WRONG};
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

impl BigQuerySink {
    /// Starts the copy of `table`: a new token and copy table.
    pub(super) async fn begin_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        // A copy left open (cancelled or failed) is dropped: its upload is
        // never finished and its stream never committed.
        self.copy = None;
        self.drop_abandoned_copies(table).await?;
        let token = random_id();
        self.client
            .query(
                &start_copy_sql(self.dataset(), self.identity(), table, &token),
                &format!("start the copy of {}", table.name),
            )
            .await?;
        self.prepare_copy_target(table, &token).await?;
        self.client
            .query(
                &create_copy_table_sql(self.dataset(), table, &token),
                &format!("create the copy table of {}", table.name),
            )
            .await?;
        self.copy = Some(Copy {
            table: table.clone(),
            rows: 0,
            writer: None,
            token,
        });
        Ok(())
    }

    /// Appends copied rows to the copy table.
    pub(super) async fn write_copy_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.copying(table, "rows")?;
        if rows.num_columns() != table.columns.len() {
            return Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "a copied batch of {} has {} columns, the table {}",
                    table.name,
                    rows.num_columns(),
                    table.columns.len()
                ),
            ));
        }
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let encoded = encode_rows(table, &rows)?;
        let method = self.config.backfill;
        let row_group_rows = self.config.load_row_group_rows;
        let target = copy_table_name(&self.copying(table, "rows")?.token);
        if self.copying(table, "rows")?.writer.is_none() {
            let writer = match method {
                BackfillMethod::LoadJob => {
                    let buffer = Arc::new(Mutex::new(Vec::new()));
                    CopyWriter::Load {
                        parquet: Mutex::new(parquet_writer(
                            &encoded.schema(),
                            &buffer,
                            row_group_rows,
                        )?),
                        buffer,
                        upload: None,
                    }
                }
                BackfillMethod::StorageWrite => CopyWriter::Stream {
                    stream: self.storage_writer()?.create_pending(&target).await?,
                    offset: 0,
                    descriptor: proto::descriptor(&encoded.schema())?,
                },
            };
            self.copying(table, "rows")?.writer = Some(writer);
        }
        let Some(copy) = self.copy.as_mut() else {
            return Err(Error::new(ErrorKind::Sink, "the copy in progress vanished"));
        };
        copy.rows += rows.num_rows() as u64;
        match copy.writer.as_mut() {
            Some(CopyWriter::Load {
                parquet,
                buffer,
                upload,
            }) => {
                parquet
                    .get_mut()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .write(&encoded)
                    .map_err(parquet_error)?;
                let chunk = drain(buffer, false);
                if !chunk.is_empty() {
                    if upload.is_none() {
                        *upload = Some(self.client.start_upload(&target).await?);
                    }
                    if let Some(upload) = upload.as_mut() {
                        self.client.put_chunk(upload, &chunk, false).await?;
                    }
                }
            }
            Some(CopyWriter::Stream {
                stream,
                offset,
                descriptor,
            }) => {
                let encoded = proto::encode_rows(&encoded)?;
                let writer = match self.writer.as_ref() {
                    Some(writer) => writer,
                    None => {
                        return Err(Error::new(
                            ErrorKind::Sink,
                            "the Storage Write client is missing",
                        ))
                    }
                };
                *offset = writer
                    .append_at(stream, *offset, descriptor, encoded)
                    .await?;
            }
            None => {}
        }
        Ok(())
    }

    /// Ends the copy of `table`, made in the snapshot of `snapshot_lsn`.
    pub(super) async fn end_copy(
        &mut self,
        table: &Arc<TableSchema>,
        snapshot_lsn: Lsn,
    ) -> Result<()> {
        self.copying(table, "the end")?;
        let Some(Copy {
            rows,
            writer,
            token,
            ..
        }) = self.copy.take()
        else {
            return Err(Error::new(ErrorKind::Sink, "the copy in progress vanished"));
        };
        let target = copy_table_name(&token);
        let started = Instant::now();
        match writer {
            Some(CopyWriter::Load {
                parquet,
                buffer,
                upload,
            }) => {
                parquet
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .close()
                    .map_err(parquet_error)?;
                let rest = drain(&buffer, true);
                match upload {
                    Some(mut upload) => self.client.put_chunk(&mut upload, &rest, true).await?,
                    None => self.client.load_file(&target, rest).await?,
                }
            }
            Some(CopyWriter::Stream { stream, .. }) => {
                let writer = match self.writer.as_ref() {
                    Some(writer) => writer,
                    None => {
                        return Err(Error::new(
                            ErrorKind::Sink,
                            "the Storage Write client is missing",
                        ))
                    }
                };
                writer.commit(&target, &stream).await?;
            }
            None => {}
        }
        self.finish_copy(table, &token, rows, snapshot_lsn).await?;
        info!(
            table = %table.name,
            rows,
            %snapshot_lsn,
            load_ms = started.elapsed().as_millis() as u64,
            "copy committed to BigQuery"
        );
        Ok(())
    }

    /// Drops the copy tables of `table`'s copies that never finished (their
    /// process died), so that a load of theirs arriving late fails.
    async fn drop_abandoned_copies(&self, table: &TableSchema) -> Result<()> {
        let rows = self
            .client
            .query(
                &select_copy_tokens_sql(self.dataset(), self.identity(), table),
                &format!("read the unfinished copies of {}", table.name),
            )
            .await?;
        for token in rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            self.drop_copy_table(&token).await;
        }
        Ok(())
    }

    /// Brings the target table of a table about to be copied to its
    /// columns, without touching its rows (they are replaced when the copy
    /// commits); re-created only when a column's type changed. Fenced by
    /// the copy's token: run late for a killed process, a re-creation
    /// cannot empty a table that a newer copy filled.
    async fn prepare_copy_target(&self, table: &TableSchema, token: &str) -> Result<()> {
        let name = target_name(&table.name);
        let statements = match self.client.table_columns(&name).await? {
            None => vec![create_target_sql(self.dataset(), table, false)],
            Some(existing) => {
                let same_types = table.columns.iter().all(|column| {
                    existing
                        .iter()
                        .find(|e| e.name.eq_ignore_ascii_case(&column.name))
                        .is_none_or(|e| {
                            bigquery_type(column).matches(&e.type_name, e.precision, e.scale)
                        })
                });
                if same_types {
                    self.column_changes(table, &existing)?
                } else {
                    vec![create_target_sql(self.dataset(), table, true)]
                }
            }
        };
        if statements.is_empty() {
            return Ok(());
        }
        let sql = fenced_copy_sql(self.dataset(), self.identity(), table, token, &statements);
        self.client
            .query(&sql, &format!("prepare BigQuery table {name} for its copy"))
            .await?;
        Ok(())
    }

    /// Moves the copied rows into the target table and records the table
    /// as copied, in one transaction fenced by the copy's token; then drops
    /// the copy table.
    async fn finish_copy(
        &mut self,
        table: &TableSchema,
        token: &str,
        rows: u64,
        snapshot_lsn: Lsn,
    ) -> Result<()> {
        let sql = finish_copy_sql(
            self.dataset(),
            self.identity(),
            table,
            token,
            rows,
            snapshot_lsn,
        );
        match self
            .client
            .query(&sql, &format!("store the copy of {}", table.name))
            .await
        {
            Ok(_) => {}
            Err(error) if error.message().contains(COPY_SUPERSEDED) => {
                // A retried script whose first run had committed finds its
                // copy already recorded.
                if self.read_copied().await?.get(&table.id) != Some(&snapshot_lsn) {
                    return Err(Error::new(
                        ErrorKind::Sink,
                        format!(
                            "the copy of {} was superseded by a copy of the same table that started later (a \
                             pipeline with the same identity, or requests of a killed one arriving late); \
                             nothing of this copy was kept: restart the pipeline to copy the table again",
                            table.name
                        ),
                    ));
                }
            }
            Err(error) if error.message().contains(COPY_ROWS_WRONG) => {
                return Err(Error::new(
                    ErrorKind::Sink,
                    format!(
                        "BigQuery holds another number of rows than the {} copied of {}; nothing of this copy \
                         was kept: restart the pipeline to copy the table again",
                        rows, table.name
                    ),
                ));
            }
            Err(error) => return Err(error),
        }
        self.drop_copy_table(token).await;
        Ok(())
    }

    /// Drops the copy table of `token`. Best effort: one left behind is
    /// dropped when its table is copied again.
    async fn drop_copy_table(&self, token: &str) {
        let name = copy_table_name(token);
        if let Err(error) = self
            .client
            .query(
                &format!("DROP TABLE IF EXISTS {}", qualified(self.dataset(), &name)),
                &format!("drop the copy table {name}"),
            )
            .await
        {
            warn!(%error, table = %name, "could not drop a copy table");
        }
    }

    pub(super) fn copying(&mut self, table: &TableSchema, what: &str) -> Result<&mut Copy> {
        match self.copy.as_mut() {
            Some(copy) if copy.table.id == table.id => Ok(copy),
            _ => Err(Error::new(
                ErrorKind::Sink,
                format!(
                    "{what} of {} arrived outside its copy (begin_table_copy was not called); this is a bug \
                     in the caller",
                    table.name
                ),
            )),
        }
    }
}
