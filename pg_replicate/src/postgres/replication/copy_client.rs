//! [`CopyClient`]: an ordinary (non-replication) session on the same wire
//! client as the replication connection, for the backfill's
//! `COPY … TO STDOUT`.
//!
//! Postgres sends one CopyData message per row. The copy client hands each
//! payload over as a slice of its read buffer, in the task that reads the
//! socket: no message object, allocation or channel hop per row, which is
//! most of what a general-purpose client spends on a binary copy.

use std::ops::ControlFlow;

use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::{self, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use super::client::{log_notice, start_session, READ_BUFFER_CAPACITY};
use super::codec::{BackendMessage, CodecError, FrontendMessage, PgCodec, MAX_MESSAGE_LEN};
use super::errors::{
    closed_unexpectedly, map_codec_error, map_server_error, unexpected, ConnInfo, Phase,
};
use super::transport::MaybeTlsStream;
use crate::postgres::PgConnectionConfig;
use crate::{Error, ErrorKind, Result};

/// Free room below which the read buffer grows before the next read.
const MIN_READ_ROOM: usize = 8 * 1024;

/// Where the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Ready for a command.
    Ready,
    /// Inside `COPY … TO STDOUT`, reading CopyData.
    Copying,
    /// CopyDone received; CommandComplete and ReadyForQuery are to come.
    CopyEnded,
    /// A socket or protocol error, or an error inside a copy: unusable.
    Broken,
}

/// An ordinary session that runs simple commands and `COPY … TO STDOUT`,
/// handing CopyData payloads over without copying them.
///
/// Connecting takes the same configuration, TLS negotiation, authentication
/// and session settings as [`ReplicationClient`](super::ReplicationClient),
/// without `replication=database`.
pub struct CopyClient {
    stream: MaybeTlsStream,
    read: BytesMut,
    write: BytesMut,
    codec: PgCodec,
    info: ConnInfo,
    state: State,
}

impl std::fmt::Debug for CopyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyClient")
            .field("info", &self.info)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl CopyClient {
    /// Connects and authenticates; errors name the cause and the fix as
    /// those of [`ReplicationClient::connect`](super::ReplicationClient::connect).
    pub async fn connect(config: &PgConnectionConfig) -> Result<CopyClient> {
        let session = start_session(config, false).await?;
        let parts = session.framed.into_parts();
        let mut read = parts.read_buf;
        read.reserve(READ_BUFFER_CAPACITY);
        Ok(CopyClient {
            stream: parts.io,
            read,
            write: parts.write_buf,
            codec: PgCodec::new(),
            info: session.info,
            state: State::Ready,
        })
    }

    /// Runs `sql` (one or more commands, none of them a copy) with the
    /// simple query protocol, discarding any rows. An error from the server
    /// is mapped as [`ReplicationClient::simple_query`](super::ReplicationClient::simple_query)
    /// maps it; the session stays usable after it.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        self.send_query(sql).await?;
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::Other(Message::ReadyForQuery(_)) => break,
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::Other(
                    Message::RowDescription(_)
                    | Message::DataRow(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::ParameterStatus(_),
                ) => {}
                other => {
                    return Err(self.fail(unexpected(
                        &format!("{other:?}"),
                        "a command",
                        &self.info,
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(map_server_error(&e, Phase::Query, &self.info)),
            None => Ok(()),
        }
    }

    /// Starts `sql`, a `COPY … TO STDOUT`; read its data with
    /// [`read_copy_data`](Self::read_copy_data). A server error (for example
    /// a table that no longer exists) leaves the session usable.
    pub async fn copy_out(&mut self, sql: &str) -> Result<()> {
        self.send_query(sql).await?;
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::Other(Message::CopyOutResponse(_)) if error.is_none() => {
                    self.state = State::Copying;
                    return Ok(());
                }
                BackendMessage::Other(Message::ReadyForQuery(_)) => {
                    return Err(match error {
                        Some(e) => map_server_error(&e, Phase::Query, &self.info),
                        None => Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "{}: the command sent for a copy did not start one",
                                self.info.endpoint
                            ),
                        ),
                    });
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::Other(Message::ParameterStatus(_)) => {}
                other => {
                    return Err(self.fail(unexpected(&format!("{other:?}"), "COPY", &self.info)))
                }
            }
        }
    }

    /// Hands the payloads of the CopyData messages that arrive next to
    /// `on_data`, in order, until `on_data` breaks or the buffered data runs
    /// out (then after at most one read of the socket). Returns the payload
    /// bytes handed over, or `None` once the copy has ended (the session is
    /// then ready for the next command).
    ///
    /// An error (from the server, the socket or `on_data`) leaves the
    /// session unusable.
    pub async fn read_copy_data<F>(&mut self, mut on_data: F) -> Result<Option<usize>>
    where
        F: FnMut(&[u8]) -> Result<ControlFlow<()>>,
    {
        loop {
            match self.state {
                State::Copying => {}
                State::CopyEnded => {
                    self.finish_copy().await?;
                    return Ok(None);
                }
                State::Ready => return Ok(None),
                State::Broken => return Err(self.broken_error()),
            }
            let scan = match take_copy_data(&mut self.read, &mut on_data) {
                Ok(scan) => scan,
                Err(e) => return Err(self.fail(e)),
            };
            if scan.next == NextFrame::Other {
                self.copy_message().await?;
            }
            if scan.bytes > 0 || scan.next == NextFrame::Stopped {
                return Ok(Some(scan.bytes));
            }
            if scan.next == NextFrame::Incomplete {
                self.fill().await?;
            }
        }
    }

    /// Ends the session (`Terminate`), best effort.
    pub async fn close(mut self) {
        self.write.clear();
        if self
            .codec
            .encode(FrontendMessage::Terminate, &mut self.write)
            .is_err()
        {
            return;
        }
        let _ = self.stream.write_all(&self.write).await;
        let _ = self.stream.flush().await;
    }

    /// Handles the message after the CopyData messages: CopyDone, an error,
    /// a notice.
    async fn copy_message(&mut self) -> Result<()> {
        match self.next_message().await? {
            BackendMessage::Other(Message::CopyDone) => self.state = State::CopyEnded,
            BackendMessage::ErrorResponse(e) => {
                let error = map_server_error(&e, Phase::Query, &self.info);
                return Err(self.fail(error));
            }
            BackendMessage::NoticeResponse(n) => log_notice(&n),
            BackendMessage::Other(Message::ParameterStatus(_)) => {}
            other => {
                let error = unexpected(&format!("{other:?}"), "COPY", &self.info);
                return Err(self.fail(error));
            }
        }
        Ok(())
    }

    /// Reads CommandComplete and ReadyForQuery after CopyDone.
    async fn finish_copy(&mut self) -> Result<()> {
        loop {
            match self.next_message().await? {
                BackendMessage::Other(Message::ReadyForQuery(_)) => {
                    self.state = State::Ready;
                    return Ok(());
                }
                BackendMessage::Other(
                    Message::CommandComplete(_) | Message::ParameterStatus(_),
                ) => {}
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::ErrorResponse(e) => {
                    let error = map_server_error(&e, Phase::Query, &self.info);
                    return Err(self.fail(error));
                }
                other => {
                    let error = unexpected(&format!("{other:?}"), "the end of COPY", &self.info);
                    return Err(self.fail(error));
                }
            }
        }
    }

    async fn send_query(&mut self, sql: &str) -> Result<()> {
        match self.state {
            State::Ready => {}
            State::Broken => return Err(self.broken_error()),
            State::Copying | State::CopyEnded => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{}: a command was sent before the copy in progress was read to its end",
                        self.info.endpoint
                    ),
                ))
            }
        }
        self.write.clear();
        if let Err(e) = self
            .codec
            .encode(FrontendMessage::Query(sql), &mut self.write)
        {
            return Err(map_codec_error(e, &self.info));
        }
        let written = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        }
        .await;
        self.write.clear();
        written.map_err(|e| {
            let error = map_codec_error(CodecError::Io(e), &self.info);
            self.fail(error)
        })
    }

    /// The next whole message, reading the socket as needed.
    async fn next_message(&mut self) -> Result<BackendMessage> {
        loop {
            match self.codec.decode(&mut self.read) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => self.fill().await?,
                Err(e) => {
                    let error = map_codec_error(e, &self.info);
                    return Err(self.fail(error));
                }
            }
        }
    }

    /// Reads once from the socket into the read buffer.
    async fn fill(&mut self) -> Result<()> {
        if self.read.capacity() - self.read.len() < MIN_READ_ROOM {
            self.read.reserve(READ_BUFFER_CAPACITY);
        }
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) => Err(self.fail(closed_unexpectedly(&self.info))),
            Ok(_) => Ok(()),
            Err(e) => {
                let error = map_codec_error(CodecError::Io(e), &self.info);
                Err(self.fail(error))
            }
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Broken;
        error
    }

    fn broken_error(&self) -> Error {
        Error::new(
            ErrorKind::Connection,
            format!(
                "the copy connection to {} failed earlier and cannot be used; open a new one",
                self.info.endpoint
            ),
        )
    }
}

/// What follows the CopyData messages [`take_copy_data`] handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextFrame {
    /// An incomplete message (or nothing): read more.
    Incomplete,
    /// A message other than CopyData, left in the buffer.
    Other,
    /// More CopyData: `on_data` asked to stop.
    Stopped,
}

/// The outcome of [`take_copy_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scan {
    /// Payload bytes handed over.
    bytes: usize,
    /// What comes next in the buffer.
    next: NextFrame,
}

/// Hands the payloads of the complete CopyData messages at the start of
/// `buf` to `on_data` and removes them from `buf`. Stops at the first
/// message of another kind, at an incomplete message, or when `on_data`
/// breaks. Pure: no I/O.
fn take_copy_data<F>(buf: &mut BytesMut, on_data: &mut F) -> Result<Scan>
where
    F: FnMut(&[u8]) -> Result<ControlFlow<()>>,
{
    let mut pos = 0;
    let mut bytes = 0;
    let next = loop {
        let Some(&[tag, l0, l1, l2, l3]) = buf.get(pos..pos + 5) else {
            break NextFrame::Incomplete;
        };
        if tag != backend::COPY_DATA_TAG {
            break NextFrame::Other;
        }
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if !(4..=MAX_MESSAGE_LEN).contains(&len) {
            buf.advance(pos);
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("invalid CopyData message length {len} from the server"),
            ));
        }
        let Some(payload) = buf.get(pos + 5..pos + 1 + len) else {
            break NextFrame::Incomplete;
        };
        let flow = on_data(payload);
        pos += 1 + len;
        bytes += len - 4;
        match flow {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break NextFrame::Stopped,
            Err(e) => {
                buf.advance(pos);
                return Err(e);
            }
        }
    };
    buf.advance(pos);
    Ok(Scan { bytes, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn collect(buf: &mut BytesMut, stop_after: usize) -> (Vec<Vec<u8>>, Scan) {
        let mut seen = Vec::new();
        let scan = take_copy_data(buf, &mut |payload: &[u8]| {
            seen.push(payload.to_vec());
            Ok(if seen.len() >= stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
        (seen, scan)
    }

    #[test]
    fn hands_over_whole_copy_data_messages_and_keeps_the_rest() {
        let mut bytes = message(b'd', b"row one");
        bytes.extend(message(b'd', b""));
        bytes.extend(message(b'd', b"row three"));
        let partial = message(b'd', b"row four");
        bytes.extend_from_slice(&partial[..7]);
        let mut buf = BytesMut::from(&bytes[..]);
        let (seen, scan) = collect(&mut buf, usize::MAX);
        assert_eq!(seen, [&b"row one"[..], b"", b"row three"]);
        assert_eq!(
            scan,
            Scan {
                bytes: 16,
                next: NextFrame::Incomplete
            }
        );
        assert_eq!(&buf[..], &partial[..7]);
        buf.extend_from_slice(&partial[7..]);
        let (seen, _) = collect(&mut buf, usize::MAX);
        assert_eq!(seen, [&b"row four"[..]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn stops_at_another_message_and_when_asked() {
        let mut bytes = message(b'd', b"a");
        bytes.extend(message(b'd', b"b"));
        bytes.extend(message(b'c', b""));
        let mut buf = BytesMut::from(&bytes[..]);
        let (seen, scan) = collect(&mut buf, 1);
        assert_eq!((seen.len(), scan.next), (1, NextFrame::Stopped));
        let (seen, scan) = collect(&mut buf, usize::MAX);
        assert_eq!(seen, [&b"b"[..]]);
        assert_eq!(scan.next, NextFrame::Other);
        assert_eq!(&buf[..], &message(b'c', b"")[..]);
    }

    #[test]
    fn rejects_impossible_lengths_and_passes_on_errors() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 2][..]);
        let error =
            take_copy_data(&mut buf, &mut |_: &[u8]| Ok(ControlFlow::Continue(()))).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Protocol);
        assert!(error.to_string().contains("length 2"), "{error}");

        let mut buf = BytesMut::from(&message(b'd', b"x")[..]);
        let error = take_copy_data(&mut buf, &mut |_: &[u8]| {
            Err(Error::new(ErrorKind::Data, "bad row"))
        })
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Data);
    }
}
