//! A data file being written: Parquet or CSV rows appended to a file in
//! the sink's `_tmp` folder, synced to disk when finished.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::config::FileFormat;
use super::csv;
use super::durable::io_error;
use crate::{Error, ErrorKind, Result};

/// Rows per Parquet row group at most: the rows a writer buffers before
/// it encodes them into the file.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// A CSV writer hands its buffer to the file past this size.
const CSV_BUFFER: usize = 1 << 20;

/// A data file being written.
pub(super) struct OpenFile {
    path: PathBuf,
    writer: FileWriter,
    /// Rows written.
    pub(super) rows: u64,
    /// Smallest and largest commit LSN of the rows written.
    pub(super) lsns: Option<(i64, i64)>,
}

enum FileWriter {
    Parquet(Box<ArrowWriter<File>>),
    Csv {
        file: File,
        buffer: Vec<u8>,
        written: u64,
    },
}

/// A finished data file, synced to disk, not yet listed.
#[derive(Debug)]
pub(super) struct FinishedFile {
    /// Where it is (in `_tmp`).
    pub(super) path: PathBuf,
    /// Rows in it.
    pub(super) rows: u64,
    /// Its size.
    pub(super) bytes: u64,
    /// Smallest and largest commit LSN of its rows.
    pub(super) lsns: Option<(i64, i64)>,
}

impl OpenFile {
    /// Creates `path` for rows of `schema`.
    pub(super) fn create(path: &Path, format: FileFormat, schema: &SchemaRef) -> Result<Self> {
        let file = File::create(path).map_err(|e| io_error("create the data file", path, e))?;
        let writer = match format {
            FileFormat::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
                    .map_err(|e| parquet_error(path, e))?;
                FileWriter::Parquet(Box::new(writer))
            }
            FileFormat::Csv => {
                let mut buffer = Vec::with_capacity(CSV_BUFFER);
                csv::write_header(schema.fields(), &mut buffer);
                FileWriter::Csv {
                    file,
                    buffer,
                    written: 0,
                }
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            rows: 0,
            lsns: None,
        })
    }

    /// Appends `rows`, whose commit LSNs range over `lsns`.
    pub(super) fn write(&mut self, rows: &RecordBatch, lsns: Option<(i64, i64)>) -> Result<()> {
        match &mut self.writer {
            FileWriter::Parquet(writer) => writer
                .write(rows)
                .map_err(|e| parquet_error(&self.path, e))?,
            FileWriter::Csv {
                file,
                buffer,
                written,
            } => {
                csv::write_rows(rows, buffer);
                if buffer.len() >= CSV_BUFFER {
                    file.write_all(buffer)
                        .map_err(|e| io_error("write the data file", &self.path, e))?;
                    *written += buffer.len() as u64;
                    buffer.clear();
                }
            }
        }
        self.rows += rows.num_rows() as u64;
        self.lsns = match (self.lsns, lsns) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
        Ok(())
    }

    /// About the bytes the file will hold: those written plus those
    /// buffered.
    pub(super) fn bytes(&self) -> u64 {
        match &self.writer {
            FileWriter::Parquet(writer) => {
                (writer.bytes_written() + writer.in_progress_size()) as u64
            }
            FileWriter::Csv {
                buffer, written, ..
            } => written + buffer.len() as u64,
        }
    }

    /// Writes what is buffered, closes the file and syncs it to disk.
    pub(super) fn finish(self) -> Result<FinishedFile> {
        let path = self.path;
        let file = match self.writer {
            FileWriter::Parquet(writer) => {
                writer.into_inner().map_err(|e| parquet_error(&path, e))?
            }
            FileWriter::Csv {
                mut file, buffer, ..
            } => {
                file.write_all(&buffer)
                    .map_err(|e| io_error("write the data file", &path, e))?;
                file
            }
        };
        file.sync_all()
            .map_err(|e| io_error("sync the data file", &path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| io_error("read the size of the data file", &path, e))?
            .len();
        Ok(FinishedFile {
            path,
            rows: self.rows,
            bytes,
            lsns: self.lsns,
        })
    }
}

fn parquet_error(path: &Path, error: parquet::errors::ParquetError) -> Error {
    Error::with_source(
        ErrorKind::Sink,
        format!("could not write the Parquet file {}", path.display()),
        error,
    )
}
