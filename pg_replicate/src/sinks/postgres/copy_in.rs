//! A streamed binary `COPY … FROM STDIN` into the target database: rows
//! are encoded into a buffer sent in chunks of [`CHUNK_BYTES`].

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use super::copy_encoder::{ColumnEncoder, HEADER, TRAILER};
use super::target_error;
use crate::types::TableName;
use crate::{Error, ErrorKind, Result};

/// Bytes encoded before they are handed to the connection.
const CHUNK_BYTES: usize = 1 << 20;

/// One column of the rows sent: its name (for errors) and its encoder.
pub struct CopyColumn<'a> {
    /// The column's name, as errors show it.
    pub name: String,
    /// Its values.
    pub encoder: ColumnEncoder<'a>,
}

/// An open `COPY … FROM STDIN (FORMAT binary)`.
pub struct CopyIn {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buffer: Vec<u8>,
    /// Where the rows go, for errors.
    target: TableName,
    /// Bytes encoded since the COPY started.
    sent: usize,
}

impl CopyIn {
    /// Starts `copy_sql` (a `COPY … FROM STDIN (FORMAT binary)`) into `target`.
    pub async fn start(client: &Client, copy_sql: &str, target: &TableName) -> Result<Self> {
        let sink = client
            .copy_in::<_, Bytes>(copy_sql)
            .await
            .map_err(|e| target_error(format!("start the COPY into {target}"), e))?;
        let mut buffer = Vec::with_capacity(CHUNK_BYTES + (CHUNK_BYTES >> 2));
        buffer.extend_from_slice(HEADER);
        Ok(Self {
            sink: Box::pin(sink),
            buffer,
            target: target.clone(),
            sent: 0,
        })
    }

    /// Bytes encoded since the COPY started.
    pub fn bytes(&self) -> usize {
        self.sent + self.buffer.len()
    }

    /// Encodes and sends the rows `rows` of `columns`.
    pub async fn send_rows(
        &mut self,
        columns: &[CopyColumn<'_>],
        rows: impl Iterator<Item = usize>,
    ) -> Result<()> {
        let count = (columns.len() as i16).to_be_bytes();
        for row in rows {
            self.buffer.extend_from_slice(&count);
            for column in columns {
                column
                    .encoder
                    .write_field(row, &mut self.buffer)
                    .map_err(|why| {
                        Error::new(
                            ErrorKind::Data,
                            format!(
                                "cannot write a value of column {} into {}: {why}",
                                column.name, self.target
                            ),
                        )
                    })?;
            }
            if self.buffer.len() >= CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES + (CHUNK_BYTES >> 2)),
        ));
        self.sent += chunk.len();
        self.sink
            .send(chunk)
            .await
            .map_err(|e| target_error(format!("send rows to the COPY into {}", self.target), e))
    }

    /// Ends the COPY; returns the number of rows the server stored.
    pub async fn finish(mut self) -> Result<u64> {
        self.buffer.extend_from_slice(TRAILER);
        self.flush().await?;
        self.sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| target_error(format!("finish the COPY into {}", self.target), e))
    }
}
