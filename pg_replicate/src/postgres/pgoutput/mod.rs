//! Decoder for the payloads of the `pgoutput` logical replication plugin,
//! protocol versions 1 and 2 (the bytes inside an `XLogData` message).
//!
//! [`decode`] is a pure function over one message: no I/O, no state. It
//! borrows names, values and message contents from the input, and allocates
//! only for the rare `Relation` and `Truncate` messages. Tuples are validated
//! when the message is decoded (so that a malformed message is rejected as a
//! whole) but not materialized: [`TupleData::iter`] walks the raw bytes again,
//! without allocating and without being able to fail.
//!
//! The format is described in the Postgres documentation, chapter "Logical
//! Replication Message Formats". All integers are big-endian; strings are
//! NUL-terminated. Protocol 2 adds the streaming of in-progress transactions:
//! the control messages (`Stream Start`, `Stop`, `Commit`, `Abort`) decode
//! with [`decode`]; the data messages between `Stream Start` and `Stream
//! Stop` carry the (sub)transaction id after the tag and decode with
//! [`decode_streamed`]. Two-phase commit messages (protocol 3) are reported
//! as [`PgOutputError::UnknownTag`].
//!
//! Only `Relation` and `Truncate` allocate (their column and table lists);
//! decoding the other messages, in particular the frequent `Insert`,
//! `Update` and `Delete`, touches no allocator, errors included.

mod kind;

pub use kind::{MessageKind, PgOutputError};

use std::fmt;

use crate::types::Lsn;

/// Decodes one pgoutput message sent outside a streamed block.
///
/// The whole of `buf` must be the message: bytes left over after it are an
/// error ([`PgOutputError::TrailingBytes`]). Strings, tuple values and
/// logical-message contents are borrowed from `buf`. Decoding never panics,
/// whatever the input.
pub fn decode(buf: &[u8]) -> Result<PgOutputMessage<'_>, PgOutputError> {
    let mut r = reader(buf)?;
    let message = decode_body(&mut r)?;
    r.finish()?;
    Ok(message)
}

/// Decodes a data message sent inside a streamed block of protocol 2
/// (between `Stream Start` and `Stream Stop`): the id of the
/// (sub)transaction that made the change, and the message.
pub fn decode_streamed(buf: &[u8]) -> Result<(u32, PgOutputMessage<'_>), PgOutputError> {
    let mut r = reader(buf)?;
    let xid = r.u32("transaction id")?;
    let message = decode_body(&mut r)?;
    r.finish()?;
    Ok((xid, message))
}

fn reader(buf: &[u8]) -> Result<Reader<'_>, PgOutputError> {
    let Some((&tag, body)) = buf.split_first() else {
        return Err(PgOutputError::Empty);
    };
    let kind = MessageKind::from_tag(tag).ok_or(PgOutputError::UnknownTag { tag })?;
    Ok(Reader {
        buf: body,
        pos: 0,
        kind,
    })
}

fn decode_body<'a>(r: &mut Reader<'a>) -> Result<PgOutputMessage<'a>, PgOutputError> {
    let kind = r.kind;
    let message = match kind {
        MessageKind::Begin => PgOutputMessage::Begin {
            final_lsn: r.lsn("final LSN")?,
            commit_time: r.i64("commit timestamp")?,
            xid: r.u32("transaction id")?,
        },
        MessageKind::Commit => PgOutputMessage::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit LSN")?,
            end_lsn: r.lsn("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        MessageKind::Origin => PgOutputMessage::Origin {
            commit_lsn: r.lsn("origin commit LSN")?,
            name: r.str("origin name")?,
        },
        MessageKind::Relation => PgOutputMessage::Relation(decode_relation(r)?),
        MessageKind::Type => PgOutputMessage::Type {
            id: r.u32("type id")?,
            namespace: r.str("type namespace")?,
            name: r.str("type name")?,
        },
        MessageKind::Insert => {
            let relation_id = r.u32("relation id")?;
            r.expect_new_tuple_marker()?;
            PgOutputMessage::Insert {
                relation_id,
                new: r.tuple("new tuple")?,
            }
        }
        MessageKind::Update => decode_update(r)?,
        MessageKind::Delete => decode_delete(r)?,
        MessageKind::Truncate => decode_truncate(r)?,
        MessageKind::Message => {
            let flags = r.u8("flags")?;
            let lsn = r.lsn("message LSN")?;
            let prefix = r.str("prefix")?;
            let len = r.count_i32("content length")?;
            PgOutputMessage::Message {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len, "content")?,
            }
        }
        MessageKind::StreamStart => PgOutputMessage::StreamStart {
            xid: r.u32("transaction id")?,
            first_segment: r.u8("first segment flag")? == 1,
        },
        MessageKind::StreamStop => PgOutputMessage::StreamStop,
        MessageKind::StreamCommit => PgOutputMessage::StreamCommit {
            xid: r.u32("transaction id")?,
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit LSN")?,
            end_lsn: r.lsn("end LSN")?,
            commit_time: r.i64("commit timestamp")?,
        },
        MessageKind::StreamAbort => PgOutputMessage::StreamAbort {
            xid: r.u32("transaction id")?,
            subxid: r.u32("subtransaction id")?,
        },
    };
    Ok(message)
}

fn decode_update<'a>(r: &mut Reader<'a>) -> Result<PgOutputMessage<'a>, PgOutputError> {
    let relation_id = r.u32("relation id")?;
    let old = match r.u8("tuple marker")? {
        b'N' => None,
        marker @ (b'K' | b'O') => {
            let old = r.old_tuple(marker)?;
            r.expect_new_tuple_marker()?;
            Some(old)
        }
        found => {
            return Err(PgOutputError::UnexpectedTupleMarker {
                message: MessageKind::Update,
                expected: "'K', 'O' or 'N'",
                found,
            })
        }
    };
    Ok(PgOutputMessage::Update {
        relation_id,
        old,
        new: r.tuple("new tuple")?,
    })
}

fn decode_delete<'a>(r: &mut Reader<'a>) -> Result<PgOutputMessage<'a>, PgOutputError> {
    let relation_id = r.u32("relation id")?;
    let old = match r.u8("tuple marker")? {
        marker @ (b'K' | b'O') => r.old_tuple(marker)?,
        found => {
            return Err(PgOutputError::UnexpectedTupleMarker {
                message: MessageKind::Delete,
                expected: "'K' or 'O'",
                found,
            })
        }
    };
    Ok(PgOutputMessage::Delete { relation_id, old })
}

fn decode_truncate<'a>(r: &mut Reader<'a>) -> Result<PgOutputMessage<'a>, PgOutputError> {
    let count = r.count_i32("relation count")?;
    let options = r.u8("options")?;
    // Check the length before allocating, so that a corrupt count cannot
    // request a huge vector.
    let ids = r.bytes(count.saturating_mul(4), "relation ids")?;
    let relation_ids = ids
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(PgOutputMessage::Truncate {
        options,
        relation_ids,
    })
}

fn decode_relation<'a>(r: &mut Reader<'a>) -> Result<RelationMessage<'a>, PgOutputError> {
    let id = r.u32("relation id")?;
    let namespace = r.str("relation namespace")?;
    let name = r.str("relation name")?;
    let replica_identity = r.u8("replica identity")?;
    let count = r.count_i16("column count")?;
    // Each column takes at least 10 bytes (flags, empty name, oid, typmod):
    // never reserve more than the remaining bytes can hold.
    let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
    for _ in 0..count {
        columns.push(RelationColumn {
            flags: r.u8("column flags")?,
            name: r.str("column name")?,
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(RelationMessage {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// One decoded pgoutput message. Borrows from the buffer it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutputMessage<'a> {
    /// Start of a transaction (`B`).
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 00:00:00 UTC, as sent.
        commit_time: i64,
        /// The transaction id.
        xid: u32,
    },
    /// End of a transaction (`C`).
    Commit {
        /// Flags; currently always 0.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record: where streaming resumes.
        end_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 00:00:00 UTC, as sent.
        commit_time: i64,
    },
    /// The transaction came from another node through replication origin
    /// `name` (`O`).
    Origin {
        /// The LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// The origin's name.
        name: &'a str,
    },
    /// The description of a table, sent before its first change and after
    /// every schema change (`R`).
    Relation(RelationMessage<'a>),
    /// The description of a non-builtin data type (`Y`).
    Type {
        /// The type's oid.
        id: u32,
        /// The type's schema (empty for `pg_catalog`).
        namespace: &'a str,
        /// The type's name.
        name: &'a str,
    },
    /// A new row (`I`).
    Insert {
        /// The table's oid, as in the [`RelationMessage`].
        relation_id: u32,
        /// The new row.
        new: TupleData<'a>,
    },
    /// A changed row (`U`).
    Update {
        /// The table's oid, as in the [`RelationMessage`].
        relation_id: u32,
        /// The old row's key or whole old row, sent when the key changed or
        /// when the table has `REPLICA IDENTITY FULL`; `None` otherwise.
        old: Option<OldTuple<'a>>,
        /// The new row. Unchanged TOAST values are sent as
        /// [`TupleValue::UnchangedToast`].
        new: TupleData<'a>,
    },
    /// A deleted row (`D`).
    Delete {
        /// The table's oid, as in the [`RelationMessage`].
        relation_id: u32,
        /// The deleted row's key, or the whole row with `REPLICA IDENTITY FULL`.
        old: OldTuple<'a>,
    },
    /// One `TRUNCATE` of one or more tables (`T`).
    Truncate {
        /// Bit set: [`TRUNCATE_CASCADE`] and/or [`TRUNCATE_RESTART_IDENTITY`].
        options: u8,
        /// The oids of the truncated tables.
        relation_ids: Vec<u32>,
    },
    /// Start of a block of a streamed in-progress transaction (`S`,
    /// protocol 2+).
    StreamStart {
        /// The top-level transaction id.
        xid: u32,
        /// Whether this is the transaction's first block.
        first_segment: bool,
    },
    /// End of a streamed block (`E`, protocol 2+).
    StreamStop,
    /// A streamed transaction committed (`c`, protocol 2+).
    StreamCommit {
        /// The top-level transaction id.
        xid: u32,
        /// Flags; currently always 0.
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the commit record.
        end_lsn: Lsn,
        /// Commit time, in microseconds since 2000-01-01 00:00:00 UTC, as sent.
        commit_time: i64,
    },
    /// A streamed transaction, or one of its subtransactions, aborted (`A`,
    /// protocol 2+): its changes are to be discarded.
    StreamAbort {
        /// The top-level transaction id.
        xid: u32,
        /// The aborted (sub)transaction; equal to `xid` when the whole
        /// transaction aborted.
        subxid: u32,
    },
    /// A message written with `pg_logical_emit_message` (`M`).
    Message {
        /// Whether the message is part of a transaction (otherwise it was
        /// sent immediately, outside any `Begin`/`Commit`).
        transactional: bool,
        /// The LSN of the message.
        lsn: Lsn,
        /// The prefix given by the writer.
        prefix: &'a str,
        /// The content, as raw bytes.
        content: &'a [u8],
    },
}

impl PgOutputMessage<'_> {
    /// Which kind of message this is.
    pub fn kind(&self) -> MessageKind {
        match self {
            PgOutputMessage::Begin { .. } => MessageKind::Begin,
            PgOutputMessage::Commit { .. } => MessageKind::Commit,
            PgOutputMessage::Origin { .. } => MessageKind::Origin,
            PgOutputMessage::Relation(_) => MessageKind::Relation,
            PgOutputMessage::Type { .. } => MessageKind::Type,
            PgOutputMessage::Insert { .. } => MessageKind::Insert,
            PgOutputMessage::Update { .. } => MessageKind::Update,
            PgOutputMessage::Delete { .. } => MessageKind::Delete,
            PgOutputMessage::Truncate { .. } => MessageKind::Truncate,
            PgOutputMessage::Message { .. } => MessageKind::Message,
            PgOutputMessage::StreamStart { .. } => MessageKind::StreamStart,
            PgOutputMessage::StreamStop => MessageKind::StreamStop,
            PgOutputMessage::StreamCommit { .. } => MessageKind::StreamCommit,
            PgOutputMessage::StreamAbort { .. } => MessageKind::StreamAbort,
        }
    }
}

/// `Truncate` option bit: `TRUNCATE ... CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// `Truncate` option bit: `TRUNCATE ... RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// A `Relation` message: the published columns of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationMessage<'a> {
    /// The table's oid; changes refer to the table by it.
    pub id: u32,
    /// The table's schema (empty for `pg_catalog`).
    pub namespace: &'a str,
    /// The table's name.
    pub name: &'a str,
    /// `pg_class.relreplident`: `d`, `f`, `i` or `n`; see
    /// [`ReplicaIdentity::from_code`](crate::types::ReplicaIdentity::from_code).
    pub replica_identity: u8,
    /// The published columns, in the order tuples send them.
    pub columns: Vec<RelationColumn<'a>>,
}

/// One column of a [`RelationMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Flags: bit 1 ([`COLUMN_FLAG_KEY`]) marks a replica identity column.
    pub flags: u8,
    /// The column's name.
    pub name: &'a str,
    /// The oid of the column's type.
    pub type_oid: u32,
    /// The type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

/// [`RelationColumn::flags`] bit marking a column of the replica identity.
pub const COLUMN_FLAG_KEY: u8 = 1;

impl RelationColumn<'_> {
    /// Whether the column is part of the replica identity (the key sent as
    /// the old tuple of updates and deletes).
    pub fn is_key(&self) -> bool {
        self.flags & COLUMN_FLAG_KEY != 0
    }
}

/// The old row sent with an update or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// Only the replica identity columns are meaningful (`K`); the other
    /// columns are sent as NULL.
    Key(TupleData<'a>),
    /// The whole old row (`O`), with `REPLICA IDENTITY FULL`.
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &TupleData<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// A row image of a change: validated, but kept as the raw bytes it was
/// sent as. [`iter`](Self::iter) yields its column values.
///
/// Invariant (established by the decoder, the only place one is built):
/// `raw` is exactly `columns` well-formed column entries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TupleData<'a> {
    columns: u16,
    raw: &'a [u8],
}

impl<'a> TupleData<'a> {
    /// The number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.columns)
    }

    /// Whether the tuple has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The column values, in column order. Does not allocate.
    pub fn iter(&self) -> TupleIter<'a> {
        TupleIter {
            remaining: self.columns,
            raw: self.raw,
        }
    }
}

impl fmt::Debug for TupleData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for TupleData<'a> {
    type Item = TupleValue<'a>;
    type IntoIter = TupleIter<'a>;

    fn into_iter(self) -> TupleIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &TupleData<'a> {
    type Item = TupleValue<'a>;
    type IntoIter = TupleIter<'a>;

    fn into_iter(self) -> TupleIter<'a> {
        self.iter()
    }
}

/// One column value of a [`TupleData`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TupleValue<'a> {
    /// SQL NULL (`n`).
    Null,
    /// A TOAST-ed value that did not change and was not sent (`u`): the
    /// column keeps its previous value.
    UnchangedToast,
    /// The value in Postgres text format (`t`).
    Text(&'a [u8]),
    /// The value in Postgres binary format (`b`), only when the subscriber
    /// asked for `binary`.
    Binary(&'a [u8]),
}

/// Iterator over the values of a [`TupleData`].
#[derive(Clone, Debug)]
pub struct TupleIter<'a> {
    remaining: u16,
    raw: &'a [u8],
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = TupleValue<'a>;

    fn next(&mut self) -> Option<TupleValue<'a>> {
        // By the `TupleData` invariant none of the `?` below can fail; if
        // it ever did, iteration would just end early instead of panicking.
        self.remaining = self.remaining.checked_sub(1)?;
        let (&kind, rest) = self.raw.split_first()?;
        let value = match kind {
            b'n' => {
                self.raw = rest;
                TupleValue::Null
            }
            b'u' => {
                self.raw = rest;
                TupleValue::UnchangedToast
            }
            _ => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
                let (value, rest) = rest.split_at_checked(len)?;
                self.raw = rest;
                if kind == b'b' {
                    TupleValue::Binary(value)
                } else {
                    TupleValue::Text(value)
                }
            }
        };
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for TupleIter<'_> {}

impl std::iter::FusedIterator for TupleIter<'_> {}

/// A cursor over a message body (after the tag byte). Offsets in errors are
/// counted from the tag byte, hence the `+ 1`s.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: MessageKind,
}

impl<'a> Reader<'a> {
    /// Fails when bytes are left over after the message.
    fn finish(&self) -> Result<(), PgOutputError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(PgOutputError::TrailingBytes {
                message: self.kind,
                count,
            }),
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn truncated(&self, field: &'static str, needed: usize) -> PgOutputError {
        PgOutputError::Truncated {
            message: self.kind,
            field,
            offset: self.pos + 1,
            needed,
            available: self.remaining(),
        }
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PgOutputError> {
        match self.rest().get(..n) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(self.truncated(field, n)),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], PgOutputError> {
        match self.rest().first_chunk::<N>() {
            Some(bytes) => {
                self.pos += N;
                Ok(*bytes)
            }
            None => Err(self.truncated(field, N)),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PgOutputError> {
        self.array::<1>(field).map(|[b]| b)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, PgOutputError> {
        self.array(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, PgOutputError> {
        self.array(field).map(i32::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PgOutputError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, PgOutputError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn, PgOutputError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    fn negative(&self, field: &'static str, value: i32) -> PgOutputError {
        PgOutputError::NegativeLength {
            message: self.kind,
            field,
            value,
        }
    }

    fn count_i16(&mut self, field: &'static str) -> Result<usize, PgOutputError> {
        let value = self.i16(field)?;
        usize::try_from(value).map_err(|_| self.negative(field, value.into()))
    }

    fn count_i32(&mut self, field: &'static str) -> Result<usize, PgOutputError> {
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| self.negative(field, value))
    }

    /// A NUL-terminated UTF-8 string, without its terminator.
    fn str(&mut self, field: &'static str) -> Result<&'a str, PgOutputError> {
        let rest = self.rest();
        let offset = self.pos + 1;
        let Some(end) = memchr::memchr(0, rest) else {
            return Err(PgOutputError::UnterminatedString {
                message: self.kind,
                field,
                offset,
            });
        };
        let bytes = rest.get(..end).unwrap_or_default();
        let s = std::str::from_utf8(bytes).map_err(|_| PgOutputError::InvalidUtf8 {
            message: self.kind,
            field,
            offset,
        })?;
        self.pos += end + 1;
        Ok(s)
    }

    /// Reads the `N` byte that introduces a new tuple.
    fn expect_new_tuple_marker(&mut self) -> Result<(), PgOutputError> {
        match self.u8("tuple marker")? {
            b'N' => Ok(()),
            found => Err(PgOutputError::UnexpectedTupleMarker {
                message: self.kind,
                expected: "'N'",
                found,
            }),
        }
    }

    /// The old tuple after its marker byte, `K` (key) or `O` (full row).
    fn old_tuple(&mut self, marker: u8) -> Result<OldTuple<'a>, PgOutputError> {
        Ok(if marker == b'K' {
            OldTuple::Key(self.tuple("old key tuple")?)
        } else {
            OldTuple::Full(self.tuple("old tuple")?)
        })
    }

    /// Validates a `TupleData` and returns it, borrowing its column bytes.
    fn tuple(&mut self, field: &'static str) -> Result<TupleData<'a>, PgOutputError> {
        let count = self.i16(field)?;
        let columns =
            u16::try_from(count).map_err(|_| self.negative("tuple column count", count.into()))?;
        let start = self.pos;
        for column in 0..usize::from(columns) {
            match self.u8(field)? {
                b'n' | b'u' => {}
                b't' | b'b' => {
                    let len = self.count_i32("tuple value length")?;
                    self.bytes(len, "tuple value")?;
                }
                kind => {
                    return Err(PgOutputError::UnknownColumnKind {
                        message: self.kind,
                        field,
                        column,
                        kind,
                    })
                }
            }
        }
        Ok(TupleData {
            columns,
            raw: self.buf.get(start..self.pos).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;
