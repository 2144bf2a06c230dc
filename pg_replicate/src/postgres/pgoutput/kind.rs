//! The kinds of pgoutput messages and the errors of decoding them.

use std::fmt;

/// The kinds of pgoutput messages (protocol 1, and the streaming messages
/// of protocol 2), named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `B`
    Begin,
    /// `C`
    Commit,
    /// `O`
    Origin,
    /// `R`
    Relation,
    /// `Y`
    Type,
    /// `I`
    Insert,
    /// `U`
    Update,
    /// `D`
    Delete,
    /// `T`
    Truncate,
    /// `M`
    Message,
    /// `S` (protocol 2+)
    StreamStart,
    /// `E` (protocol 2+)
    StreamStop,
    /// `c` (protocol 2+)
    StreamCommit,
    /// `A` (protocol 2+)
    StreamAbort,
}

impl MessageKind {
    /// The kind a message tag byte stands for, if it is a known tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            b'B' => Self::Begin,
            b'C' => Self::Commit,
            b'O' => Self::Origin,
            b'R' => Self::Relation,
            b'Y' => Self::Type,
            b'I' => Self::Insert,
            b'U' => Self::Update,
            b'D' => Self::Delete,
            b'T' => Self::Truncate,
            b'M' => Self::Message,
            b'S' => Self::StreamStart,
            b'E' => Self::StreamStop,
            b'c' => Self::StreamCommit,
            b'A' => Self::StreamAbort,
            _ => return None,
        })
    }

    /// The message's tag byte.
    pub fn tag(self) -> u8 {
        match self {
            Self::Begin => b'B',
            Self::Commit => b'C',
            Self::Origin => b'O',
            Self::Relation => b'R',
            Self::Type => b'Y',
            Self::Insert => b'I',
            Self::Update => b'U',
            Self::Delete => b'D',
            Self::Truncate => b'T',
            Self::Message => b'M',
            Self::StreamStart => b'S',
            Self::StreamStop => b'E',
            Self::StreamCommit => b'c',
            Self::StreamAbort => b'A',
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Begin => "Begin",
            Self::Commit => "Commit",
            Self::Origin => "Origin",
            Self::Relation => "Relation",
            Self::Type => "Type",
            Self::Insert => "Insert",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::Truncate => "Truncate",
            Self::Message => "Message",
            Self::StreamStart => "Stream Start",
            Self::StreamStop => "Stream Stop",
            Self::StreamCommit => "Stream Commit",
            Self::StreamAbort => "Stream Abort",
        };
        write!(f, "{name} ('{}')", char::from(self.tag()))
    }
}

/// A message that is not valid pgoutput. Holds no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgOutputError {
    /// The message has no bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte is not a known message tag.
    #[error("unknown pgoutput message tag {}{}", DisplayTag(*.tag), tag_hint(*.tag))]
    UnknownTag {
        /// The tag byte.
        tag: u8,
    },
    /// The message ends before a field.
    #[error("truncated pgoutput {message} message: {field} needs {needed} bytes at offset {offset}, {available} available")]
    Truncated {
        /// The message being decoded.
        message: MessageKind,
        /// The field that is cut off.
        field: &'static str,
        /// Offset of the field, counted from the tag byte.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message at `offset`.
        available: usize,
    },
    /// A string field has no terminating NUL byte.
    #[error("truncated pgoutput {message} message: {field} at offset {offset} has no terminating NUL byte")]
    UnterminatedString {
        /// The message being decoded.
        message: MessageKind,
        /// The string field.
        field: &'static str,
        /// Offset of the string, counted from the tag byte.
        offset: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("pgoutput {message} message: {field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The message being decoded.
        message: MessageKind,
        /// The string field.
        field: &'static str,
        /// Offset of the string, counted from the tag byte.
        offset: usize,
    },
    /// A count or length field is negative.
    #[error("pgoutput {message} message: {field} is negative ({value})")]
    NegativeLength {
        /// The message being decoded.
        message: MessageKind,
        /// The count or length field.
        field: &'static str,
        /// The value sent.
        value: i32,
    },
    /// A tuple marker byte (`N`, `K`, `O`) is not one allowed here.
    #[error("pgoutput {message} message: expected tuple marker {expected}, found {}", DisplayTag(*.found))]
    UnexpectedTupleMarker {
        /// The message being decoded.
        message: MessageKind,
        /// The markers allowed here.
        expected: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A tuple column has an unknown kind byte (not `n`, `u`, `t`, `b`).
    #[error("pgoutput {message} message: {field} column {column} has unknown kind {}", DisplayTag(*.kind))]
    UnknownColumnKind {
        /// The message being decoded.
        message: MessageKind,
        /// Which tuple of the message.
        field: &'static str,
        /// The column's index, from 0.
        column: usize,
        /// The kind byte found.
        kind: u8,
    },
    /// Bytes are left over after the end of the message.
    #[error("pgoutput {message} message has {count} unexpected trailing bytes")]
    TrailingBytes {
        /// The message decoded.
        message: MessageKind,
        /// The number of bytes left over.
        count: usize,
    },
}

/// Displays a byte as hex, plus the character when it is printable ASCII.
struct DisplayTag(u8);

impl fmt::Display for DisplayTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X}", self.0)?;
        if self.0.is_ascii_graphic() {
            write!(f, " ('{}')", char::from(self.0))?;
        }
        Ok(())
    }
}

/// Explains tags that belong to later protocol versions.
fn tag_hint(tag: u8) -> &'static str {
    match tag {
        b'b' | b'P' | b'K' | b'r' | b'p' => {
            " (a two-phase commit message of protocol version 3+; this decoder speaks versions 1 and 2)"
        }
        _ => "",
    }
}
