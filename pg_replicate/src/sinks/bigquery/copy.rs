//! A table's backfill in progress: Parquet streamed into a load job's
//! resumable upload, or rows appended to a pending Storage Write stream,
//! into a table of the copy's own; its rows move to the target table in
//! the transaction that records the table as copied, so that requests of a
//! killed process that arrive late cannot change a table copied since.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use prost_types::DescriptorProto;

use super::client::{ResumableUpload, UPLOAD_CHUNK};
use crate::types::TableSchema;
use crate::{Error, ErrorKind, Result};

/// A table's backfill in progress.
pub(super) struct Copy {
    pub(super) table: Arc<TableSchema>,
    pub(super) rows: u64,
    pub(super) writer: Option<CopyWriter>,
    /// Names the copy's table (see [`super::schema::copy_table_name`]) and
    /// fences its commit.
    pub(super) token: String,
}

pub(super) enum CopyWriter {
    /// Parquet streamed through a resumable upload.
    Load {
        /// In a mutex only to make the sink `Sync` (Parquet's encoders are
        /// `Send` but not `Sync`); never contended.
        parquet: Mutex<ArrowWriter<SharedBuffer>>,
        buffer: Arc<Mutex<Vec<u8>>>,
        upload: Option<ResumableUpload>,
    },
    /// Rows appended to a pending Storage Write stream.
    Stream {
        stream: String,
        offset: i64,
        descriptor: DescriptorProto,
    },
}

/// The Parquet writer's output, drained in upload chunks while it writes.
pub(super) struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    // The buffer holds plain bytes: a panic elsewhere cannot leave it
    // inconsistent.
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the whole upload chunks (or, with `all`, everything) written so far.
pub(super) fn drain(buffer: &Mutex<Vec<u8>>, all: bool) -> Vec<u8> {
    let mut bytes = lock(buffer);
    let take = if all {
        bytes.len()
    } else {
        bytes.len() / UPLOAD_CHUNK * UPLOAD_CHUNK
    };
    bytes.drain(..take).collect()
}

/// `rows` as one Parquet file.
pub(super) fn parquet_file(rows: &RecordBatch, row_group_rows: usize) -> Result<Vec<u8>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let mut writer = parquet_writer(&rows.schema(), &buffer, row_group_rows)?;
    writer.write(rows).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    Ok(drain(&buffer, true))
}

pub(super) fn parquet_writer(
    schema: &arrow::datatypes::SchemaRef,
    buffer: &Arc<Mutex<Vec<u8>>>,
    row_group_rows: usize,
) -> Result<ArrowWriter<SharedBuffer>> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    ArrowWriter::try_new(
        SharedBuffer(buffer.clone()),
        schema.clone(),
        Some(properties),
    )
    .map_err(parquet_error)
}

pub(super) fn parquet_error(error: parquet::errors::ParquetError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        "write rows as Parquet for a load job",
        error,
    )
}
