//! [`ParquetSource`]: the [`Source`] implementation, and its change stream
//! of files.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::ParquetSourceConfig;
use super::listing::{due_groups, FileEntry};
use super::schema::{columns_of, inserts, same_columns, table_schema, to_table_layout};
use super::status::{FileError, StatusHandle};
use crate::pipeline::{BatchConfig, PipelineAction};
use crate::sources::{CdcStream, Source, SourcePlan, TableCopyStream};
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState, TableChanges};
use crate::types::{Lsn, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Loads the Parquet files of a folder or bucket into one table, on a
/// schedule (see the module documentation).
pub struct ParquetSource {
    config: ParquetSourceConfig,
    status: StatusHandle,
    table: Option<Arc<TableSchema>>,
}

impl ParquetSource {
    /// A source reading the files `config` describes.
    pub fn new(config: ParquetSourceConfig) -> Self {
        Self {
            config,
            status: StatusHandle::default(),
            table: None,
        }
    }

    /// A shared view of what the source did (last listing, files and rows
    /// loaded, files skipped with their errors).
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// The table: configured columns, or those of the oldest readable file.
    async fn discover_table(&mut self) -> Result<Arc<TableSchema>> {
        if let Some(table) = &self.table {
            return Ok(table.clone());
        }
        let columns = match &self.config.columns {
            Some(columns) => columns.clone(),
            None => {
                let files = list(&self.config).await?;
                let groups = due_groups(files, Lsn::ZERO, i64::MAX);
                let mut found = None;
                for file in groups.into_iter().flat_map(|(_, files)| files) {
                    match read_file(&self.config, &file.path).await? {
                        Ok(batches) => match columns_of(batches.schema.as_ref()) {
                            Ok(columns) => {
                                found = Some(columns);
                                break;
                            }
                            Err(why) => self.skip(&file.path, why),
                        },
                        Err(why) => self.skip(&file.path, why),
                    }
                }
                found.ok_or_else(|| {
                    Error::new(
                        ErrorKind::SourceSetup,
                        format!(
                            "no readable Parquet file under {} to take the columns of table {} from; add a \
                             file, or give the columns (ParquetSourceConfig::columns)",
                            self.config.location_name, self.config.table
                        ),
                    )
                })?
            }
        };
        let table = Arc::new(table_schema(&self.config.table, columns));
        self.table = Some(table.clone());
        Ok(table)
    }

    fn skip(&self, path: &str, error: String) {
        warn!(file = path, %error, "skipping a Parquet file");
        self.status.update(|s| {
            s.errors.push(FileError {
                path: path.to_owned(),
                error,
            })
        });
    }
}

/// Every file under the configured prefix.
async fn list(config: &ParquetSourceConfig) -> Result<Vec<FileEntry>> {
    let prefix = (!config.prefix.as_ref().is_empty()).then_some(&config.prefix);
    config
        .store
        .list(prefix)
        .map_ok(|meta| FileEntry {
            path: meta.location.to_string(),
            modified_micros: meta.last_modified.timestamp_micros(),
            size: meta.size,
        })
        .try_collect()
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connection,
                format!(
                    "cannot list the Parquet files under {}",
                    config.location_name
                ),
                e,
            )
        })
}

/// A file's record batches.
struct FileRows {
    schema: arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
}

/// Reads a whole file. `Ok(Err(why))`: the file is bad (or gone) and is
/// skipped; `Err`: the store failed, and the listing is tried again.
async fn read_file(
    config: &ParquetSourceConfig,
    path: &str,
) -> Result<std::result::Result<FileRows, String>> {
    let location = Path::from(path);
    let fetched = async { config.store.get(&location).await?.bytes().await }.await;
    let bytes: Bytes = match fetched {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(Err("disappeared before it was read".to_owned()))
        }
        Err(e) => {
            return Err(Error::with_source(
                ErrorKind::Connection,
                format!("cannot read {path} from {}", config.location_name),
                e,
            ))
        }
    };
    Ok(parse_file(bytes))
}

fn parse_file(bytes: Bytes) -> std::result::Result<FileRows, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| format!("is not a readable Parquet file: {e}"))?;
    let schema = reader.schema().clone();
    let batches = reader
        .build()
        .map_err(|e| format!("is not a readable Parquet file: {e}"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a readable Parquet file: {e}"))?;
    Ok(FileRows { schema, batches })
}

#[async_trait]
impl Source for ParquetSource {
    type TableCopy = ParquetTableCopy;
    type Cdc = ParquetCdcStream;

    async fn prepare(
        &mut self,
        _action: PipelineAction,
        _state: &ResumptionState,
    ) -> Result<SourcePlan> {
        let table = self.discover_table().await?;
        Ok(SourcePlan {
            tables: vec![table],
            tables_to_copy: Vec::new(),
            snapshot_lsn: Lsn::ZERO,
        })
    }

    async fn copy_table(
        &mut self,
        _table: &Arc<TableSchema>,
        _batch: &BatchConfig,
    ) -> Result<Self::TableCopy> {
        // Files arrive through the change stream only; there is no copy.
        Ok(ParquetTableCopy)
    }

    async fn start_cdc(
        &mut self,
        state: &ResumptionState,
        batch: &BatchConfig,
        cancel: CancellationToken,
    ) -> Result<Self::Cdc> {
        let table = self.discover_table().await?;
        let start = Lsn(self.config.start_after_micros.unwrap_or(0));
        let position = state.last_lsn.map_or(start, |stored| stored.max(start));
        info!(location = %self.config.location_name, table = %table.name, %position, "watching for Parquet files");
        let (durable, _) = tokio::sync::watch::channel(position);
        Ok(ParquetCdcStream {
            config: self.config.clone(),
            table,
            status: self.status.clone(),
            position,
            due: VecDeque::new(),
            pending: VecDeque::new(),
            next_listing: SystemTime::now(),
            max_rows: batch.max_rows.max(1),
            cancel,
            durable,
        })
    }
}

/// The copy of a Parquet source's table: empty (files come as changes).
pub struct ParquetTableCopy;

#[async_trait]
impl TableCopyStream for ParquetTableCopy {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        Ok(None)
    }
}

/// New files as batches of inserts, one transaction per modification time.
pub struct ParquetCdcStream {
    config: ParquetSourceConfig,
    table: Arc<TableSchema>,
    status: StatusHandle,
    /// Files up to here are handed out.
    position: Lsn,
    /// The last listing's files not read yet, a group per modification
    /// time: read one group at a time, so that memory holds one group's
    /// rows, not a whole backlog's.
    due: VecDeque<(Lsn, Vec<FileEntry>)>,
    /// Batches of the group read last, not handed out yet.
    pending: VecDeque<CdcBatch>,
    next_listing: SystemTime,
    max_rows: usize,
    cancel: CancellationToken,
    durable: tokio::sync::watch::Sender<Lsn>,
}

impl ParquetCdcStream {
    /// Lists the store and notes the files due, by modification time.
    async fn run_listing(&mut self) -> Result<()> {
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let settled_before = now_micros - self.config.settle.as_micros() as i64;
        let files = match list(&self.config).await {
            Ok(files) => files,
            Err(error) => {
                self.status
                    .update(|s| s.last_listing_error = Some(error.to_string()));
                return Err(error);
            }
        };
        self.due = due_groups(files, self.position, settled_before).into();
        self.status.update(|s| {
            s.runs += 1;
            s.last_run = Some(SystemTime::now());
            s.last_listing_error = None;
        });
        Ok(())
    }

    /// Reads the files of one modification time and queues them as one
    /// transaction (several batches when it exceeds `max_rows`). A store
    /// failure ends the stream with an error (nothing of this group is
    /// counted as loaded; the pipeline lists again from what the sink
    /// stored).
    async fn queue_group(&mut self, lsn: Lsn, files: &[FileEntry]) -> Result<()> {
        let before = self.position;
        let mut events = Vec::new();
        let mut rows_in_batch = 0usize;
        let mut seq = 0u32;
        let (mut files_loaded, mut rows_loaded) = (0u64, 0u64);
        for file in files {
            let loaded = self.file_events(file, lsn, &mut seq).await?;
            match loaded {
                Ok(file_events) => {
                    let rows: usize = file_events
                        .iter()
                        .map(|e| match e {
                            CdcEvent::Changes(c) => c.batch.num_rows(),
                            _ => 0,
                        })
                        .sum();
                    files_loaded += 1;
                    rows_loaded += rows as u64;
                    for event in file_events {
                        if rows_in_batch >= self.max_rows {
                            self.pending.push_back(CdcBatch {
                                events: std::mem::take(&mut events),
                                end_lsn: before,
                                transactions: 0,
                                continues: true,
                            });
                            rows_in_batch = 0;
                        }
                        if let CdcEvent::Changes(c) = &event {
                            rows_in_batch += c.batch.num_rows();
                        }
                        events.push(event);
                    }
                }
                Err(why) => {
                    warn!(file = %file.path, error = %why, "skipping a Parquet file");
                    self.status.update(|s| {
                        s.errors.push(FileError {
                            path: file.path.clone(),
                            error: why,
                        })
                    });
                }
            }
        }
        // A group whose files were all skipped still moves the position past them.
        self.pending.push_back(CdcBatch {
            events,
            end_lsn: lsn,
            transactions: 1,
            continues: false,
        });
        self.position = lsn;
        self.status.update(|s| {
            s.files_loaded += files_loaded;
            s.rows_loaded += rows_loaded;
        });
        Ok(())
    }

    async fn file_events(
        &self,
        file: &FileEntry,
        lsn: Lsn,
        seq: &mut u32,
    ) -> Result<std::result::Result<Vec<CdcEvent>, String>> {
        Ok(read_file(&self.config, &file.path)
            .await?
            .and_then(|rows| self.events_of(file, rows, lsn, seq)))
    }

    /// A file's rows as change events, or why they do not fit the table.
    fn events_of(
        &self,
        file: &FileEntry,
        rows: FileRows,
        lsn: Lsn,
        seq: &mut u32,
    ) -> std::result::Result<Vec<CdcEvent>, String> {
        let columns = columns_of(rows.schema.as_ref())?;
        if !same_columns(&self.table, &columns) {
            let describe = |columns: &[crate::types::ColumnSchema]| {
                columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.pg_type.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "has columns ({}) but table {} has ({})",
                describe(&columns),
                self.table.name,
                describe(&self.table.columns)
            ));
        }
        let mut events = Vec::with_capacity(rows.batches.len());
        for batch in &rows.batches {
            let table_rows = to_table_layout(&self.table, batch)?;
            let changes = inserts(&self.table, &table_rows, lsn, file.modified_micros, *seq)?;
            *seq = seq.wrapping_add(batch.num_rows() as u32);
            events.push(CdcEvent::Changes(TableChanges {
                table: self.table.clone(),
                batch: changes,
            }));
        }
        Ok(events)
    }
}

#[async_trait]
impl CdcStream for ParquetCdcStream {
    async fn next_batch(&mut self) -> Result<Option<CdcBatch>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(Some(batch));
            }
            if self.cancel.is_cancelled() {
                return Ok(None);
            }
            if let Some((lsn, files)) = self.due.pop_front() {
                self.queue_group(lsn, &files).await?;
                continue;
            }
            let wait = self
                .next_listing
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(wait) => {}
            }
            self.next_listing = self.config.schedule.next_after(SystemTime::now());
            self.run_listing().await?;
        }
    }

    async fn confirm_durable(&mut self, lsn: Lsn) -> Result<()> {
        // Nothing to release: the files stay where they are.
        self.durable.send_replace(lsn);
        Ok(())
    }

    fn durable_sender(&self) -> tokio::sync::watch::Sender<Lsn> {
        self.durable.clone()
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
