//! Streamed in-progress transactions (pgoutput protocol 2) waiting for
//! their commit: the raw messages of each transaction, kept in memory up to
//! a bound shared by all of them and spilled to a local file beyond it.
//!
//! Spill files are unlinked as soon as they are created, so nothing is left
//! behind however the process ends.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::{Error, ErrorKind, Result};

/// The messages of one streamed transaction.
pub(crate) struct Spool {
    memory: Vec<Bytes>,
    memory_bytes: usize,
    file: Option<BufWriter<File>>,
    /// Subtransactions that aborted: their messages are skipped on replay.
    aborted: HashSet<u32>,
}

/// Where spill files go and how much the spools may keep in memory.
pub(crate) struct SpoolLimits {
    /// Directory of the spill files.
    pub dir: PathBuf,
    /// Bytes all spools together keep in memory.
    pub max_memory: usize,
}

impl Spool {
    pub(crate) fn new() -> Self {
        Self {
            memory: Vec::new(),
            memory_bytes: 0,
            file: None,
            aborted: HashSet::new(),
        }
    }

    /// Bytes this spool holds in memory.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Adds a streamed message (tag, subtransaction id, body). `in_memory`
    /// is what all spools hold in memory; beyond `limits.max_memory` this
    /// spool moves to a spill file. Returns the change of memory held.
    pub(crate) fn push(
        &mut self,
        message: Bytes,
        in_memory: usize,
        limits: &SpoolLimits,
    ) -> Result<isize> {
        if self.file.is_none() && in_memory.saturating_add(message.len()) > limits.max_memory {
            let released = self.memory_bytes as isize;
            let mut file = BufWriter::with_capacity(1 << 20, spill_file(&limits.dir)?);
            for held in self.memory.drain(..) {
                write_record(&mut file, &held)?;
            }
            self.memory_bytes = 0;
            self.file = Some(file);
            tracing::debug!(
                dir = %limits.dir.display(),
                "a streamed transaction outgrew the memory bound; spilling it to disk"
            );
            write_record(self.file_mut()?, &message)?;
            return Ok(-released);
        }
        if let Some(file) = &mut self.file {
            write_record(file, &message)?;
            return Ok(0);
        }
        self.memory_bytes += message.len();
        self.memory.push(message);
        Ok(message_len_isize(self.memory.last()))
    }

    fn file_mut(&mut self) -> Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| spill_error("use the spill file", std::io::ErrorKind::NotFound.into()))
    }

    /// A subtransaction aborted: its changes are dropped.
    pub(crate) fn abort_subtransaction(&mut self, subxid: u32) {
        self.aborted.insert(subxid);
    }

    /// Reads the messages back, in order, without those of aborted
    /// subtransactions.
    pub(crate) fn into_replay(self) -> Result<Replay> {
        let file = match self.file {
            Some(writer) => {
                let mut file = writer
                    .into_inner()
                    .map_err(|e| spill_error("flush the spill file", e.into_error()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| spill_error("rewind the spill file", e))?;
                Some(BufReader::with_capacity(1 << 20, file))
            }
            None => None,
        };
        Ok(Replay {
            file,
            memory: self.memory.into_iter(),
            aborted: self.aborted,
            buffer: Vec::new(),
            current: Bytes::new(),
        })
    }
}

fn message_len_isize(message: Option<&Bytes>) -> isize {
    message.map_or(0, |m| m.len() as isize)
}

/// The messages of a committed streamed transaction, read back.
pub(crate) struct Replay {
    file: Option<BufReader<File>>,
    memory: std::vec::IntoIter<Bytes>,
    aborted: HashSet<u32>,
    /// The record last read from the file.
    buffer: Vec<u8>,
    /// The message last taken from memory.
    current: Bytes,
}

impl Replay {
    /// The next message of a subtransaction that did not abort (tag,
    /// subtransaction id, body), or `None` at the end.
    pub(crate) fn next_message(&mut self) -> Result<Option<&[u8]>> {
        loop {
            if let Some(file) = &mut self.file {
                if read_record(file, &mut self.buffer)? {
                    if !self.aborted.contains(&record_xid(&self.buffer)) {
                        return Ok(Some(&self.buffer));
                    }
                    continue;
                }
                self.file = None;
            }
            let Some(message) = self.memory.next() else {
                return Ok(None);
            };
            if !self.aborted.contains(&record_xid(&message)) {
                self.current = message;
                return Ok(Some(&self.current));
            }
        }
    }
}

/// The (sub)transaction id after a streamed message's tag (0 when the
/// message is too short; the decoder then reports it as truncated).
fn record_xid(message: &[u8]) -> u32 {
    message
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

fn write_record(file: &mut BufWriter<File>, message: &[u8]) -> Result<()> {
    let len = u32::try_from(message.len()).map_err(|_| {
        Error::new(
            ErrorKind::Protocol,
            "a streamed pgoutput message is larger than 4 GiB",
        )
    })?;
    file.write_all(&len.to_le_bytes())
        .and_then(|()| file.write_all(message))
        .map_err(|e| spill_error("write to the spill file", e))
}

/// Reads one record into `buffer`; `false` at the end of the file.
fn read_record(file: &mut BufReader<File>, buffer: &mut Vec<u8>) -> Result<bool> {
    let mut len = [0u8; 4];
    match file.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(spill_error("read the spill file", e)),
    }
    buffer.clear();
    buffer.resize(u32::from_le_bytes(len) as usize, 0);
    file.read_exact(buffer)
        .map_err(|e| spill_error("read the spill file", e))?;
    Ok(true)
}

/// A new, already unlinked, spill file in `dir`.
fn spill_file(dir: &Path) -> Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "pg_replicate-spill-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!(
                    "cannot create a spill file in {} for a large streamed transaction; make the \
                     directory writable or choose another with BatchConfig::spill_dir",
                    dir.display()
                ),
                e,
            )
        })?;
    // Unlinked at once: the open handle keeps the data, nothing is left behind.
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), %error, "could not unlink a spill file");
    }
    Ok(file)
}

fn spill_error(what: &str, error: std::io::Error) -> Error {
    Error::with_source(
        ErrorKind::Io,
        format!("cannot {what} of a large streamed transaction (is the disk full?)"),
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xid: u32, body: &[u8]) -> Bytes {
        let mut m = vec![b'I'];
        m.extend_from_slice(&xid.to_be_bytes());
        m.extend_from_slice(body);
        Bytes::from(m)
    }

    fn replay_all(spool: Spool) -> Vec<Vec<u8>> {
        let mut replay = spool.into_replay().unwrap();
        let mut out = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    #[test]
    fn keeps_order_in_memory_and_on_disk_and_drops_aborted_subtransactions() {
        for max_memory in [usize::MAX, 0, 40] {
            let limits = SpoolLimits {
                dir: std::env::temp_dir(),
                max_memory,
            };
            let mut spool = Spool::new();
            let mut held = 0isize;
            let mut expected = Vec::new();
            for i in 0..100u32 {
                let xid = if i % 10 == 3 { 7 } else { 5 };
                let m = message(xid, &i.to_be_bytes());
                if xid == 5 {
                    expected.push(m.to_vec());
                }
                held += spool.push(m, held as usize, &limits).unwrap();
                assert_eq!(held as usize, spool.memory_bytes());
            }
            spool.abort_subtransaction(7);
            if max_memory != usize::MAX {
                assert_eq!(spool.memory_bytes(), 0, "spilled at {max_memory}");
            }
            assert_eq!(replay_all(spool), expected, "max_memory {max_memory}");
        }
    }

    #[test]
    fn an_unwritable_spill_directory_is_a_clear_error() {
        let limits = SpoolLimits {
            dir: PathBuf::from("/nonexistent/pg_replicate"),
            max_memory: 0,
        };
        let error = Spool::new().push(message(1, b"x"), 0, &limits).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Io);
        assert!(error.to_string().contains("spill_dir"), "{error}");
    }
}
