//! Incremental parser of the PostgreSQL binary COPY format, the output of
//! `COPY ... TO STDOUT (FORMAT binary)`.
//!
//! The stream is: the 11-byte signature `PGCOPY\n\377\r\n\0`, an `i32` of
//! flags, an `i32` header extension length and that many bytes to skip; then
//! tuples, each an `i16` field count followed by, per field, an `i32` length
//! (-1 for NULL) and that many bytes; and finally the trailer, a field count
//! of -1. All integers are big-endian.
//!
//! [`CopyBinaryParser::feed`] takes the stream in chunks cut anywhere. Rows
//! that lie wholly inside a chunk are handed to the callback in place; only
//! a row cut by the end of a chunk is copied, into a buffer that is reused.
//! Each row is validated before the callback sees it, so [`RowFields`] can
//! iterate without failing and without allocating.

use std::fmt;

/// The signature every binary COPY stream starts with.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xFF\r\n\0";
/// Signature, flags and header extension length.
const HEADER_LEN: usize = SIGNATURE.len() + 4 + 4;
/// Flag bits 16-31 mark format changes a reader must not ignore (bit 16:
/// rows carry OIDs); bits 0-15 may be ignored.
const CRITICAL_FLAGS: u32 = 0xFFFF_0000;
/// A buffer grown past this by one very large row is released afterwards.
const KEEP_BUFFER_CAPACITY: usize = 1 << 20;

/// Parses one binary COPY stream fed in arbitrary chunks.
///
/// Feed every chunk in order with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) to check that the stream ended properly. After an
/// error, the parser refuses further input ([`CopyBinaryError::Failed`]).
#[derive(Debug)]
pub struct CopyBinaryParser {
    expected_fields: usize,
    state: State,
    /// Bytes of a header or row cut by the end of a chunk.
    pending: Vec<u8>,
    /// While a row is pending: a lower bound of its total length, always
    /// greater than `pending.len()`. Bytes are added up to this bound before
    /// the row is scanned again.
    pending_need: usize,
    rows: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting the fixed header in `pending`.
    Header,
    /// Skipping this many bytes of header extension.
    Extension(u32),
    /// Reading rows.
    Rows,
    /// The trailer was read.
    Done,
    /// An error was returned.
    Failed,
}

impl CopyBinaryParser {
    /// A parser for rows of exactly `expected_fields` fields (the number of
    /// columns the COPY selects).
    pub fn new(expected_fields: usize) -> Self {
        Self {
            expected_fields,
            state: State::Header,
            pending: Vec::new(),
            pending_need: 0,
            rows: 0,
        }
    }

    /// The number of rows handed to the callback so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the trailer has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parses the next `chunk` of the stream, calling `on_row` once per
    /// complete row, in order.
    ///
    /// The fields passed to `on_row` borrow from `chunk` (or from the
    /// parser's buffer for a row cut by a chunk boundary). An error returned
    /// by `on_row` stops parsing and is returned as [`CopyBinaryError::Row`];
    /// that row does not count in [`rows`](Self::rows).
    pub fn feed<F, E>(&mut self, chunk: &[u8], on_row: &mut F) -> Result<(), CopyBinaryError<E>>
    where
        F: FnMut(&mut RowFields<'_>) -> Result<(), E>,
    {
        let result = self.feed_inner(chunk, on_row);
        if result.is_err() {
            self.state = State::Failed;
            self.pending = Vec::new();
        }
        result
    }

    /// Checks that the stream ended with its trailer and returns the number
    /// of rows seen.
    ///
    /// `E` is free so that the error has the same type as [`feed`](Self::feed)'s;
    /// it never holds a [`CopyBinaryError::Row`].
    pub fn finish<E>(self) -> Result<u64, CopyBinaryError<E>> {
        match self.state {
            State::Done => Ok(self.rows),
            State::Failed => Err(CopyBinaryError::Failed),
            State::Header => Err(CopyBinaryError::TruncatedHeader {
                received: self.pending.len(),
            }),
            State::Extension(missing) => Err(CopyBinaryError::TruncatedHeaderExtension { missing }),
            State::Rows if self.pending.is_empty() => {
                Err(CopyBinaryError::MissingTrailer { rows: self.rows })
            }
            State::Rows => Err(CopyBinaryError::TruncatedRow {
                row: self.rows + 1,
                received: self.pending.len(),
            }),
        }
    }

    fn feed_inner<F, E>(
        &mut self,
        mut chunk: &[u8],
        on_row: &mut F,
    ) -> Result<(), CopyBinaryError<E>>
    where
        F: FnMut(&mut RowFields<'_>) -> Result<(), E>,
    {
        loop {
            match self.state {
                State::Rows => break,
                State::Header => {
                    chunk = self.read_header(chunk)?;
                    if self.state == State::Header {
                        return Ok(());
                    }
                }
                State::Extension(missing) => {
                    let skip = u32::try_from(chunk.len()).map_or(missing, |n| n.min(missing));
                    chunk = chunk.get(skip as usize..).unwrap_or_default();
                    let missing = missing - skip;
                    if missing > 0 {
                        self.state = State::Extension(missing);
                        return Ok(());
                    }
                    self.state = State::Rows;
                }
                State::Done => return after_trailer(chunk),
                State::Failed => return Err(CopyBinaryError::Failed),
            }
        }
        if !self.pending.is_empty() {
            chunk = self.complete_pending(chunk, on_row)?;
            if !self.pending.is_empty() {
                return Ok(());
            }
            if self.state == State::Done {
                return after_trailer(chunk);
            }
        }
        self.parse_in_place(chunk, on_row)
    }

    /// Collects the fixed header (in `pending`, as it may be cut anywhere)
    /// and checks it. Returns the rest of the chunk.
    fn read_header<'c, E>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], CopyBinaryError<E>> {
        let take = (HEADER_LEN - self.pending.len()).min(chunk.len());
        let (head, rest) = chunk.split_at(take);
        self.pending.extend_from_slice(head);
        // Reject a wrong signature as soon as its first byte arrives.
        let seen = self.pending.len().min(SIGNATURE.len());
        if self.pending.get(..seen) != SIGNATURE.get(..seen) {
            return Err(CopyBinaryError::BadSignature);
        }
        let Some(header) = self.pending.first_chunk::<HEADER_LEN>() else {
            return Ok(rest);
        };
        let [.., f0, f1, f2, f3, e0, e1, e2, e3] = *header;
        let flags = u32::from_be_bytes([f0, f1, f2, f3]);
        let extension = i32::from_be_bytes([e0, e1, e2, e3]);
        self.pending.clear();
        if flags & CRITICAL_FLAGS != 0 {
            return Err(CopyBinaryError::UnsupportedFlags { flags });
        }
        let extension = u32::try_from(extension)
            .map_err(|_| CopyBinaryError::NegativeExtensionLength { length: extension })?;
        self.state = if extension == 0 {
            State::Rows
        } else {
            State::Extension(extension)
        };
        Ok(rest)
    }

    /// Adds bytes of `chunk` to the pending row until it is complete, then
    /// hands it over. Returns the rest of the chunk (empty when the row is
    /// still incomplete).
    fn complete_pending<'c, F, E>(
        &mut self,
        mut chunk: &'c [u8],
        on_row: &mut F,
    ) -> Result<&'c [u8], CopyBinaryError<E>>
    where
        F: FnMut(&mut RowFields<'_>) -> Result<(), E>,
    {
        loop {
            let take = self
                .pending_need
                .saturating_sub(self.pending.len())
                .min(chunk.len());
            let (head, rest) = chunk.split_at(take);
            self.pending.extend_from_slice(head);
            chunk = rest;
            if self.pending.len() < self.pending_need {
                return Ok(chunk);
            }
            match scan_row(&self.pending, self.expected_fields, self.rows)? {
                Scan::Need(need) => self.pending_need = need,
                Scan::Row { fields, .. } => {
                    on_row(&mut RowFields::new(fields, self.expected_fields))
                        .map_err(CopyBinaryError::Row)?;
                    self.rows += 1;
                    self.release_pending();
                    return Ok(chunk);
                }
                Scan::Trailer { .. } => {
                    self.state = State::Done;
                    self.release_pending();
                    return Ok(chunk);
                }
            }
        }
    }

    fn release_pending(&mut self) {
        if self.pending.capacity() > KEEP_BUFFER_CAPACITY {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
    }

    /// The fast path: rows wholly inside `chunk` go to the callback in
    /// place; a cut row at the end is kept in `pending`.
    #[inline]
    fn parse_in_place<F, E>(
        &mut self,
        mut chunk: &[u8],
        on_row: &mut F,
    ) -> Result<(), CopyBinaryError<E>>
    where
        F: FnMut(&mut RowFields<'_>) -> Result<(), E>,
    {
        let expected = self.expected_fields;
        while !chunk.is_empty() {
            match scan_row(chunk, expected, self.rows)? {
                Scan::Row { fields, rest } => {
                    on_row(&mut RowFields::new(fields, expected)).map_err(CopyBinaryError::Row)?;
                    self.rows += 1;
                    chunk = rest;
                }
                Scan::Trailer { rest } => {
                    self.state = State::Done;
                    return after_trailer(rest);
                }
                Scan::Need(need) => {
                    self.pending.extend_from_slice(chunk);
                    self.pending_need = need;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn after_trailer<E>(rest: &[u8]) -> Result<(), CopyBinaryError<E>> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CopyBinaryError::DataAfterTrailer { bytes: rest.len() })
    }
}

/// What [`scan_row`] found at the start of its input.
enum Scan<'a> {
    /// A complete, valid row: its fields (after the field count) and the
    /// bytes after it.
    Row { fields: &'a [u8], rest: &'a [u8] },
    /// The trailer, and the bytes after it.
    Trailer { rest: &'a [u8] },
    /// The input is cut short: the row is at least this many bytes long
    /// (always more than the input's length).
    Need(usize),
}

/// Validates the row at the start of `data`. `rows_before` numbers rows in
/// errors.
#[inline(always)]
fn scan_row<E>(
    data: &[u8],
    expected: usize,
    rows_before: u64,
) -> Result<Scan<'_>, CopyBinaryError<E>> {
    let Some((count, body)) = data.split_first_chunk::<2>() else {
        return Ok(Scan::Need(2));
    };
    let count = i16::from_be_bytes(*count);
    if usize::try_from(count).ok() != Some(expected) {
        return if count == -1 {
            Ok(Scan::Trailer { rest: body })
        } else {
            Err(CopyBinaryError::FieldCount {
                row: rows_before + 1,
                expected,
                found: count,
            })
        };
    }
    // Walk the field lengths; `pos` may run past the end of `body` when a
    // value is cut, which the next length read (or the final check) notices.
    let mut pos = 0usize;
    for field in 0..expected {
        let Some(len) = body.get(pos..).and_then(<[u8]>::first_chunk::<4>) else {
            return Ok(Scan::Need(pos.saturating_add(2 + 4)));
        };
        let len = i32::from_be_bytes(*len);
        pos += 4;
        if len >= 0 {
            pos = pos.saturating_add(len as usize);
        } else if len != -1 {
            return Err(CopyBinaryError::NegativeLength {
                row: rows_before + 1,
                field,
                length: len,
            });
        }
    }
    match body.split_at_checked(pos) {
        Some((fields, rest)) => Ok(Scan::Row { fields, rest }),
        None => Ok(Scan::Need(pos.saturating_add(2))),
    }
}

/// The fields of one row, as `Some(bytes)` (the value in Postgres binary
/// format) or `None` (NULL). Borrowed from the input; does not allocate.
///
/// Invariant (established by the parser, the only place one is built):
/// `data` starts with `remaining` well-formed fields.
pub struct RowFields<'r> {
    data: &'r [u8],
    remaining: usize,
}

impl<'r> RowFields<'r> {
    fn new(data: &'r [u8], fields: usize) -> Self {
        Self {
            data,
            remaining: fields,
        }
    }
}

impl fmt::Debug for RowFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowFields")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<'r> Iterator for RowFields<'r> {
    type Item = Option<&'r [u8]>;

    #[inline]
    fn next(&mut self) -> Option<Option<&'r [u8]>> {
        // By the invariant none of the `?` below can fail; if one ever did,
        // iteration would end early rather than panic.
        self.remaining = self.remaining.checked_sub(1)?;
        let (len, rest) = self.data.split_first_chunk::<4>()?;
        let Ok(len) = usize::try_from(i32::from_be_bytes(*len)) else {
            self.data = rest;
            return Some(None);
        };
        let (value, rest) = rest.split_at_checked(len)?;
        self.data = rest;
        Some(Some(value))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for RowFields<'_> {}

impl std::iter::FusedIterator for RowFields<'_> {}

/// An error of [`CopyBinaryParser`]: a malformed stream, or the row
/// callback's error `E`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CopyBinaryError<E> {
    /// The stream does not start with the binary COPY signature.
    #[error("not a binary COPY stream: it does not start with the signature `PGCOPY\\n\\377\\r\\n\\0` (was the COPY run with FORMAT binary?)")]
    BadSignature,
    /// The header has flag bits set that change the format in a way this
    /// parser does not know (bit 16: rows carry OIDs).
    #[error("binary COPY header flags {flags:#010x} ask for an unsupported format (bits 16-31 are critical; bit 16 means rows carry OIDs)")]
    UnsupportedFlags {
        /// The flags sent.
        flags: u32,
    },
    /// The header extension length is negative.
    #[error("binary COPY header extension length is negative ({length})")]
    NegativeExtensionLength {
        /// The length sent.
        length: i32,
    },
    /// A row does not have the expected number of fields.
    #[error("binary COPY row {row} has {found} fields, expected {expected}")]
    FieldCount {
        /// The row's number, from 1.
        row: u64,
        /// The number of fields the parser was created for.
        expected: usize,
        /// The field count sent.
        found: i16,
    },
    /// A field length is negative but not -1 (NULL).
    #[error("binary COPY row {row}, field {field}: invalid length {length}")]
    NegativeLength {
        /// The row's number, from 1.
        row: u64,
        /// The field's index, from 0.
        field: usize,
        /// The length sent.
        length: i32,
    },
    /// Bytes follow the trailer.
    #[error("{bytes} bytes of binary COPY data after the trailer")]
    DataAfterTrailer {
        /// The number of bytes seen after the trailer (in that chunk).
        bytes: usize,
    },
    /// The stream ended inside the header.
    #[error("binary COPY stream ended inside its header ({received} of 19 bytes received)")]
    TruncatedHeader {
        /// Header bytes received.
        received: usize,
    },
    /// The stream ended inside the header extension.
    #[error("binary COPY stream ended inside its header extension ({missing} bytes missing)")]
    TruncatedHeaderExtension {
        /// Extension bytes not received.
        missing: u32,
    },
    /// The stream ended inside a row.
    #[error("binary COPY stream ended inside row {row} ({received} bytes of it received)")]
    TruncatedRow {
        /// The row's number, from 1.
        row: u64,
        /// Bytes of the row received.
        received: usize,
    },
    /// The stream ended after a row, without the trailer.
    #[error("binary COPY stream ended after {rows} rows without its trailer")]
    MissingTrailer {
        /// Rows seen.
        rows: u64,
    },
    /// The parser already returned an error and takes no more input.
    #[error("binary COPY parser used after an error")]
    Failed,
    /// The row callback failed.
    #[error(transparent)]
    Row(E),
}

impl<E> CopyBinaryError<E> {
    /// Converts the callback error, keeping the other variants.
    pub fn map_row<F>(self, f: impl FnOnce(E) -> F) -> CopyBinaryError<F> {
        use CopyBinaryError as C;
        match self {
            C::BadSignature => C::BadSignature,
            C::UnsupportedFlags { flags } => C::UnsupportedFlags { flags },
            C::NegativeExtensionLength { length } => C::NegativeExtensionLength { length },
            C::FieldCount {
                row,
                expected,
                found,
            } => C::FieldCount {
                row,
                expected,
                found,
            },
            C::NegativeLength { row, field, length } => C::NegativeLength { row, field, length },
            C::DataAfterTrailer { bytes } => C::DataAfterTrailer { bytes },
            C::TruncatedHeader { received } => C::TruncatedHeader { received },
            C::TruncatedHeaderExtension { missing } => C::TruncatedHeaderExtension { missing },
            C::TruncatedRow { row, received } => C::TruncatedRow { row, received },
            C::MissingTrailer { rows } => C::MissingTrailer { rows },
            C::Failed => C::Failed,
            C::Row(e) => C::Row(f(e)),
        }
    }
}

#[cfg(test)]
mod tests;
