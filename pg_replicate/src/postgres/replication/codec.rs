//! Framing of the Postgres wire protocol for the replication connection and
//! the walsender's CopyData payloads (XLogData, keepalive, standby status
//! update). Pure: no I/O, so everything here is tested with hand-built bytes.
//!
//! The decoder splits frames off the read buffer without copying: a CopyData
//! payload is a [`Bytes`] that shares the read buffer, and decoding it into a
//! [`ReplicationMessage`] only moves the start of that slice.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::{backend, frontend};
use tokio_util::codec::{Decoder, Encoder};

use super::errors::ServerError;
use crate::types::Lsn;

/// Largest backend message accepted. Postgres itself never builds a message
/// above 1 GiB (`MaxAllocSize`); a larger length means a corrupt stream.
pub const MAX_MESSAGE_LEN: usize = (1 << 30) + 1024;

/// Tag of `CopyBothResponse`, which `backend::Message::parse` does not know.
pub const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Tag byte of an XLogData CopyData payload.
const XLOG_DATA_TAG: u8 = b'w';
/// Tag byte of a primary keepalive CopyData payload.
const KEEPALIVE_TAG: u8 = b'k';
/// Tag byte of a standby status update CopyData payload.
const STANDBY_STATUS_TAG: u8 = b'r';
/// XLogData header: tag, WAL start, WAL end, server time.
const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;
/// Keepalive: tag, WAL end, server time, reply flag.
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
/// Standby status update payload: tag, three LSNs, client time, reply flag.
const STANDBY_STATUS_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// Failure of the codec: the socket failed, the server sent bytes that are
/// not the protocol, or a message to send cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The server sent something that is not valid protocol.
    #[error("invalid message from the server: {0}")]
    Protocol(String),
    /// A message to send cannot be encoded (for example a NUL byte in a
    /// string).
    #[error("cannot encode message: {0}")]
    Invalid(String),
}

/// One message from the server, as the replication client needs it.
pub enum BackendMessage {
    /// CopyData payload (without the 5-byte message header); shares the read
    /// buffer.
    CopyData(Bytes),
    /// `CopyBothResponse` ('W'): the server has entered streaming mode.
    CopyBothResponse,
    /// `ErrorResponse`, with its fields parsed.
    ErrorResponse(ServerError),
    /// `NoticeResponse`, with its fields parsed.
    NoticeResponse(ServerError),
    /// Any other message, parsed by `postgres-protocol`.
    Other(backend::Message),
}

impl fmt::Debug for BackendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendMessage::CopyData(data) => f.debug_tuple("CopyData").field(&data.len()).finish(),
            BackendMessage::CopyBothResponse => f.write_str("CopyBothResponse"),
            BackendMessage::ErrorResponse(e) => f.debug_tuple("ErrorResponse").field(e).finish(),
            BackendMessage::NoticeResponse(e) => f.debug_tuple("NoticeResponse").field(e).finish(),
            BackendMessage::Other(m) => f.write_str(message_name(m)),
        }
    }
}

/// The name of a `postgres-protocol` backend message, for error messages.
fn message_name(message: &backend::Message) -> &'static str {
    use backend::Message as M;
    match message {
        M::AuthenticationOk
        | M::AuthenticationCleartextPassword
        | M::AuthenticationMd5Password(_)
        | M::AuthenticationSasl(_)
        | M::AuthenticationSaslContinue(_)
        | M::AuthenticationSaslFinal(_)
        | M::AuthenticationGss
        | M::AuthenticationGssContinue(_)
        | M::AuthenticationKerberosV5
        | M::AuthenticationScmCredential
        | M::AuthenticationSspi => "Authentication",
        M::BackendKeyData(_) => "BackendKeyData",
        M::BindComplete => "BindComplete",
        M::CloseComplete => "CloseComplete",
        M::CommandComplete(_) => "CommandComplete",
        M::CopyData(_) => "CopyData",
        M::CopyDone => "CopyDone",
        M::CopyInResponse(_) => "CopyInResponse",
        M::CopyOutResponse(_) => "CopyOutResponse",
        M::DataRow(_) => "DataRow",
        M::EmptyQueryResponse => "EmptyQueryResponse",
        M::NoData => "NoData",
        M::NotificationResponse(_) => "NotificationResponse",
        M::ParameterDescription(_) => "ParameterDescription",
        M::ParameterStatus(_) => "ParameterStatus",
        M::ParseComplete => "ParseComplete",
        M::PortalSuspended => "PortalSuspended",
        M::ReadyForQuery(_) => "ReadyForQuery",
        M::RowDescription(_) => "RowDescription",
        _ => "message",
    }
}

/// A message the client sends. There is deliberately no `Debug`: the
/// password variants must never end up in a log.
pub enum FrontendMessage<'a> {
    /// Startup packet with its `(name, value)` parameters.
    Startup(&'a [(&'a str, &'a str)]),
    /// `PasswordMessage`: a cleartext password or an md5 hash.
    Password(&'a [u8]),
    /// First SASL message, naming the mechanism.
    SaslInitialResponse {
        /// Mechanism name, for example `SCRAM-SHA-256`.
        mechanism: &'a str,
        /// Mechanism data.
        data: &'a [u8],
    },
    /// Further SASL message.
    SaslResponse(&'a [u8]),
    /// Simple query.
    Query(&'a str),
    /// Standby status update, sent as CopyData.
    StandbyStatus(StandbyStatusUpdate),
    /// End of the client's side of the copy stream.
    CopyDone,
    /// Close the session.
    Terminate,
}

/// Standby status update ('r'): what the client has written, flushed and
/// applied, so the server can recycle WAL up to `flush`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last WAL position received and written.
    pub write: Lsn,
    /// Last WAL position durably stored; the slot advances to this point.
    pub flush: Lsn,
    /// Last WAL position applied.
    pub apply: Lsn,
    /// Client clock, microseconds since 2000-01-01 UTC.
    pub client_time: i64,
    /// Ask the server to answer with a keepalive right away.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Appends the whole CopyData message (header and payload) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(1 + 4 + STANDBY_STATUS_LEN);
        buf.put_u8(backend::COPY_DATA_TAG);
        buf.put_i32((4 + STANDBY_STATUS_LEN) as i32);
        buf.put_u8(STANDBY_STATUS_TAG);
        buf.put_u64(self.write.0);
        buf.put_u64(self.flush.0);
        buf.put_u64(self.apply.0);
        buf.put_i64(self.client_time);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

/// A message of the logical replication stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of WAL decoded by the output plugin (one pgoutput message).
    XLogData {
        /// WAL position where this data starts.
        wal_start: Lsn,
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since 2000-01-01 UTC.
        server_time: i64,
        /// The output plugin's message; shares the connection's read buffer.
        data: Bytes,
    },
    /// Primary keepalive.
    Keepalive {
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since 2000-01-01 UTC.
        server_time: i64,
        /// The server wants a standby status update now (or it will
        /// eventually drop the connection after `wal_sender_timeout`).
        reply_requested: bool,
    },
}

impl ReplicationMessage {
    /// Decodes a CopyData payload of the replication stream. Does not
    /// allocate: the XLogData body is the same buffer, advanced past its
    /// header.
    pub fn decode(mut payload: Bytes) -> Result<ReplicationMessage, CodecError> {
        let Some(&tag) = payload.first() else {
            return Err(CodecError::Protocol("empty CopyData message".into()));
        };
        match tag {
            XLOG_DATA_TAG => {
                if payload.len() < XLOG_DATA_HEADER_LEN {
                    return Err(CodecError::Protocol(format!(
                        "XLogData message of {} bytes is shorter than its {XLOG_DATA_HEADER_LEN}-byte header",
                        payload.len()
                    )));
                }
                payload.advance(1);
                let wal_start = Lsn(payload.get_u64());
                let wal_end = Lsn(payload.get_u64());
                let server_time = payload.get_i64();
                Ok(ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    server_time,
                    data: payload,
                })
            }
            KEEPALIVE_TAG => {
                if payload.len() != KEEPALIVE_LEN {
                    return Err(CodecError::Protocol(format!(
                        "keepalive message of {} bytes, expected {KEEPALIVE_LEN}",
                        payload.len()
                    )));
                }
                payload.advance(1);
                let wal_end = Lsn(payload.get_u64());
                let server_time = payload.get_i64();
                let reply_requested = payload.get_u8() != 0;
                Ok(ReplicationMessage::Keepalive {
                    wal_end,
                    server_time,
                    reply_requested,
                })
            }
            other => Err(CodecError::Protocol(format!(
                "unknown replication message type {:?} (0x{other:02x})",
                char::from(other)
            ))),
        }
    }
}

/// The current time in the protocol's form: microseconds since 2000-01-01
/// UTC.
pub fn pg_now_micros() -> i64 {
    system_time_to_pg_micros(SystemTime::now())
}

/// Converts a wall-clock time to microseconds since 2000-01-01 UTC.
pub fn system_time_to_pg_micros(time: SystemTime) -> i64 {
    let unix_micros = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    unix_micros.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// Converts microseconds since 2000-01-01 UTC (as in `server_time`) to a
/// wall-clock time.
pub fn pg_micros_to_system_time(micros: i64) -> SystemTime {
    let unix_micros = micros.saturating_add(PG_EPOCH_OFFSET_MICROS);
    if unix_micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(unix_micros.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(unix_micros.unsigned_abs())
    }
}

/// Codec of the Postgres protocol (version 3) for `tokio_util`'s `Framed`.
#[derive(Debug, Default)]
pub struct PgCodec {
    _private: (),
}

impl PgCodec {
    /// A new codec.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for PgCodec {
    type Item = BackendMessage;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BackendMessage>, CodecError> {
        let header = match backend::Header::parse(src) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(e) => return Err(CodecError::Protocol(e.to_string())),
        };
        // `Header::parse` rejects lengths below 4, so this is not negative.
        let len = usize::try_from(header.len())
            .map_err(|_| CodecError::Protocol("negative message length".into()))?;
        if len > MAX_MESSAGE_LEN {
            return Err(CodecError::Protocol(format!(
                "message of {len} bytes (tag {:?}) exceeds the {MAX_MESSAGE_LEN}-byte limit",
                char::from(header.tag())
            )));
        }
        let total = len + 1;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        match header.tag() {
            backend::COPY_DATA_TAG => {
                let mut frame = src.split_to(total).freeze();
                frame.advance(5);
                Ok(Some(BackendMessage::CopyData(frame)))
            }
            COPY_BOTH_RESPONSE_TAG => {
                // Body: overall format, column count, per-column formats. The
                // replication protocol always uses binary CopyData; ignore it.
                src.advance(total);
                Ok(Some(BackendMessage::CopyBothResponse))
            }
            _ => match backend::Message::parse(src) {
                Ok(Some(backend::Message::ErrorResponse(body))) => Ok(Some(
                    BackendMessage::ErrorResponse(ServerError::from_fields(body.fields())?),
                )),
                Ok(Some(backend::Message::NoticeResponse(body))) => Ok(Some(
                    BackendMessage::NoticeResponse(ServerError::from_fields(body.fields())?),
                )),
                Ok(Some(message)) => Ok(Some(BackendMessage::Other(message))),
                Ok(None) => Err(CodecError::Protocol(
                    "incomplete message after a complete header".into(),
                )),
                Err(e) => Err(CodecError::Protocol(e.to_string())),
            },
        }
    }
}

fn invalid(e: io::Error) -> CodecError {
    CodecError::Invalid(e.to_string())
}

impl Encoder<FrontendMessage<'_>> for PgCodec {
    type Error = CodecError;

    fn encode(&mut self, item: FrontendMessage<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            FrontendMessage::Startup(params) => {
                frontend::startup_message(params.iter().copied(), dst).map_err(invalid)
            }
            FrontendMessage::Password(password) => {
                frontend::password_message(password, dst).map_err(invalid)
            }
            FrontendMessage::SaslInitialResponse { mechanism, data } => {
                frontend::sasl_initial_response(mechanism, data, dst).map_err(invalid)
            }
            FrontendMessage::SaslResponse(data) => {
                frontend::sasl_response(data, dst).map_err(invalid)
            }
            FrontendMessage::Query(sql) => frontend::query(sql, dst).map_err(invalid),
            FrontendMessage::StandbyStatus(update) => {
                update.encode(dst);
                Ok(())
            }
            FrontendMessage::CopyDone => {
                frontend::copy_done(dst);
                Ok(())
            }
            FrontendMessage::Terminate => {
                frontend::terminate(dst);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn xlog_data(start: u64, end: u64, time: i64, data: &[u8]) -> Vec<u8> {
        let mut body = vec![b'w'];
        body.extend_from_slice(&start.to_be_bytes());
        body.extend_from_slice(&end.to_be_bytes());
        body.extend_from_slice(&time.to_be_bytes());
        body.extend_from_slice(data);
        message(b'd', &body)
    }

    fn keepalive(end: u64, time: i64, reply: bool) -> Vec<u8> {
        let mut body = vec![b'k'];
        body.extend_from_slice(&end.to_be_bytes());
        body.extend_from_slice(&time.to_be_bytes());
        body.push(u8::from(reply));
        message(b'd', &body)
    }

    fn decode_all(bytes: &[u8]) -> Vec<BackendMessage> {
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    fn replication(m: BackendMessage) -> ReplicationMessage {
        match m {
            BackendMessage::CopyData(data) => ReplicationMessage::decode(data).unwrap(),
            other => panic!("expected CopyData, got {other:?}"),
        }
    }

    #[test]
    fn decodes_xlog_data_without_copying() {
        let bytes = xlog_data(0x16_B374_D848, 0x17_0000_0000, 12345, b"Bpayload");
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(BackendMessage::CopyData(payload)) = codec.decode(&mut buf).unwrap() else {
            panic!("expected CopyData");
        };
        let msg = ReplicationMessage::decode(payload).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            server_time,
            data,
        } = msg
        else {
            panic!("expected XLogData");
        };
        assert_eq!(wal_start, Lsn(0x16_B374_D848));
        assert_eq!(wal_end, Lsn(0x17_0000_0000));
        assert_eq!(server_time, 12345);
        assert_eq!(&data[..], b"Bpayload");
        // The payload points into the original read buffer: 5-byte message
        // header plus 25-byte XLogData header.
        assert_eq!(data.as_ptr() as usize, base + 5 + 25);
    }

    #[test]
    fn decodes_empty_xlog_data_and_keepalive() {
        let mut bytes = xlog_data(1, 2, 3, b"");
        bytes.extend(keepalive(0xABCD, -7, true));
        bytes.extend(keepalive(0xABCE, 8, false));
        let mut msgs = decode_all(&bytes).into_iter().map(replication);
        assert_eq!(
            msgs.next(),
            Some(ReplicationMessage::XLogData {
                wal_start: Lsn(1),
                wal_end: Lsn(2),
                server_time: 3,
                data: Bytes::new(),
            })
        );
        assert_eq!(
            msgs.next(),
            Some(ReplicationMessage::Keepalive {
                wal_end: Lsn(0xABCD),
                server_time: -7,
                reply_requested: true,
            })
        );
        assert_eq!(
            msgs.next(),
            Some(ReplicationMessage::Keepalive {
                wal_end: Lsn(0xABCE),
                server_time: 8,
                reply_requested: false,
            })
        );
        assert_eq!(msgs.next(), None);
    }

    #[test]
    fn rejects_malformed_copy_data() {
        for payload in [
            &b""[..],
            &b"w\0\0\0"[..],
            &b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"[..],
            &b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"[..],
            &b"x123"[..],
        ] {
            let err = ReplicationMessage::decode(Bytes::copy_from_slice(payload)).unwrap_err();
            assert!(matches!(err, CodecError::Protocol(_)), "{payload:?}");
        }
    }

    #[test]
    fn split_reads_wait_for_the_whole_message() {
        let mut bytes = xlog_data(10, 20, 30, b"hello world");
        bytes.extend(keepalive(40, 50, false));
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Feed one byte at a time: every prefix must yield nothing or a whole
        // message, never an error.
        for byte in &bytes {
            buf.put_u8(*byte);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(replication(m));
            }
        }
        assert_eq!(got.len(), 2);
        assert!(matches!(
            &got[0],
            ReplicationMessage::XLogData { data, .. } if &data[..] == b"hello world"
        ));
        assert!(matches!(
            got[1],
            ReplicationMessage::Keepalive {
                wal_end: Lsn(40),
                ..
            }
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_message_reserves_its_length() {
        let bytes = xlog_data(1, 2, 3, &[7; 10_000]);
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::from(&bytes[..100]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= bytes.len());
    }

    #[test]
    fn copy_both_response_header_is_handled() {
        // 'W', length, format 0, zero columns; then ReadyForQuery would not
        // follow in streaming mode, but a keepalive does.
        let mut bytes = message(b'W', &[0, 0, 0]);
        bytes.extend(keepalive(1, 2, false));
        let msgs = decode_all(&bytes);
        assert!(matches!(msgs[0], BackendMessage::CopyBothResponse));
        assert!(matches!(msgs[1], BackendMessage::CopyData(_)));
    }

    #[test]
    fn parses_error_and_notice_fields() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"bob\"\0\0";
        let mut bytes = message(b'E', body);
        bytes.extend(message(
            b'N',
            b"SNOTICE\0C00000\0Mhello\0Dsome detail\0Hsome hint\0\0",
        ));
        let msgs = decode_all(&bytes);
        let BackendMessage::ErrorResponse(e) = &msgs[0] else {
            panic!("expected ErrorResponse");
        };
        assert_eq!(e.severity, "FATAL");
        assert_eq!(e.code, "28P01");
        assert_eq!(e.message, "password authentication failed for user \"bob\"");
        assert_eq!(e.detail, None);
        let BackendMessage::NoticeResponse(n) = &msgs[1] else {
            panic!("expected NoticeResponse");
        };
        assert_eq!(n.detail.as_deref(), Some("some detail"));
        assert_eq!(n.hint.as_deref(), Some("some hint"));
    }

    #[test]
    fn other_messages_go_through_postgres_protocol() {
        let mut bytes = message(b'S', b"server_version\x0015.8\0");
        bytes.extend(message(b'Z', b"I"));
        bytes.extend(message(b'c', b""));
        let msgs = decode_all(&bytes);
        assert!(matches!(
            msgs[0],
            BackendMessage::Other(backend::Message::ParameterStatus(_))
        ));
        assert!(matches!(
            msgs[1],
            BackendMessage::Other(backend::Message::ReadyForQuery(_))
        ));
        assert!(matches!(
            msgs[2],
            BackendMessage::Other(backend::Message::CopyDone)
        ));
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Protocol(_))
        ));
        // A known tag whose body does not match its length.
        let mut buf = BytesMut::from(&message(b'Z', b"")[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn encodes_standby_status_update() {
        let mut buf = BytesMut::new();
        PgCodec::new()
            .encode(
                FrontendMessage::StandbyStatus(StandbyStatusUpdate {
                    write: Lsn(0x0102_0304_0506_0708),
                    flush: Lsn(0x10),
                    apply: Lsn(0x20),
                    client_time: 0x0A0B,
                    reply_requested: true,
                }),
                &mut buf,
            )
            .unwrap();
        let mut expected = vec![b'd', 0, 0, 0, 38, b'r'];
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&0x10u64.to_be_bytes());
        expected.extend_from_slice(&0x20u64.to_be_bytes());
        expected.extend_from_slice(&0x0A0Bi64.to_be_bytes());
        expected.push(1);
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn encodes_frontend_messages() {
        let mut codec = PgCodec::new();
        let mut buf = BytesMut::new();
        codec
            .encode(FrontendMessage::Query("IDENTIFY_SYSTEM"), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"Q\0\0\0\x14IDENTIFY_SYSTEM\0");
        buf.clear();
        codec.encode(FrontendMessage::CopyDone, &mut buf).unwrap();
        codec.encode(FrontendMessage::Terminate, &mut buf).unwrap();
        assert_eq!(&buf[..], b"c\0\0\0\x04X\0\0\0\x04");
        buf.clear();
        codec
            .encode(
                FrontendMessage::Startup(&[("user", "u"), ("replication", "database")]),
                &mut buf,
            )
            .unwrap();
        assert_eq!(
            &buf[..],
            b"\0\0\0\x25\0\x03\0\0user\0u\0replication\0database\0\0"
        );
        // A NUL byte cannot travel in a C string.
        assert!(matches!(
            codec.encode(FrontendMessage::Query("a\0b"), &mut buf),
            Err(CodecError::Invalid(_))
        ));
    }

    #[test]
    fn pg_epoch_conversions() {
        let epoch = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(system_time_to_pg_micros(epoch), 0);
        assert_eq!(
            system_time_to_pg_micros(UNIX_EPOCH),
            -PG_EPOCH_OFFSET_MICROS
        );
        assert_eq!(pg_micros_to_system_time(0), epoch);
        assert_eq!(
            pg_micros_to_system_time(-PG_EPOCH_OFFSET_MICROS),
            UNIX_EPOCH
        );
        assert_eq!(
            pg_micros_to_system_time(-PG_EPOCH_OFFSET_MICROS - 1),
            UNIX_EPOCH - Duration::from_micros(1)
        );
        assert!(pg_now_micros() > 700_000_000_000_000);
    }
}
