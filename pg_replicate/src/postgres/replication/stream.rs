//! [`ReplicationStream`]: the connection after `START_REPLICATION`, in
//! CopyBoth mode.

use futures_util::StreamExt;
use postgres_protocol::message::backend::Message;
use tokio_util::codec::Encoder;

use super::client::{log_notice, terminate};
use super::codec::{
    pg_now_micros, BackendMessage, FrontendMessage, PgCodec, ReplicationMessage,
    StandbyStatusUpdate,
};
use super::errors::{map_codec_error, map_server_error, unexpected, ConnInfo, Phase};
use super::transport::PgFramed;
use crate::types::Lsn;
use crate::Result;

/// The stream of a started logical replication: XLogData and keepalives
/// from the server, standby status updates from the client.
///
/// [`next_message`](Self::next_message) is cancel-safe: dropping its future
/// (for example when another branch of `tokio::select!` wins) loses no data,
/// since partially read messages stay in the connection's read buffer.
pub struct ReplicationStream {
    framed: PgFramed,
    info: ConnInfo,
    /// The server ended the stream (CopyDone or end of the socket).
    ended: bool,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("info", &self.info)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ReplicationStream {
    pub(super) fn new(framed: PgFramed, info: ConnInfo) -> ReplicationStream {
        ReplicationStream {
            framed,
            info,
            ended: false,
        }
    }

    /// The next XLogData or keepalive; `Ok(None)` once the server has ended
    /// the stream (CopyDone) or closed the connection. An error the server
    /// reports (for example a publication that does not exist) is returned
    /// with its message and SQLSTATE.
    ///
    /// Cancel-safe. An XLogData's `data` shares the read buffer: decoding a
    /// message does not copy it.
    pub async fn next_message(&mut self) -> Result<Option<ReplicationMessage>> {
        while !self.ended {
            let message = match self.framed.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(map_codec_error(e, &self.info)),
                None => {
                    tracing::warn!(
                        endpoint = %self.info.endpoint,
                        "server closed the replication connection without CopyDone"
                    );
                    self.ended = true;
                    break;
                }
            };
            match message {
                BackendMessage::CopyData(payload) => {
                    return ReplicationMessage::decode(payload)
                        .map(Some)
                        .map_err(|e| map_codec_error(e, &self.info));
                }
                BackendMessage::Other(Message::CopyDone) => {
                    tracing::info!(endpoint = %self.info.endpoint, "server ended the replication stream");
                    self.ended = true;
                }
                // A walsender that shuts down (fast or smart shutdown) ends
                // the command without a CopyDone, then closes the connection.
                BackendMessage::Other(Message::CommandComplete(_)) => {
                    tracing::info!(endpoint = %self.info.endpoint, "server ended the replication stream (shutting down)");
                    self.ended = true;
                }
                BackendMessage::ErrorResponse(e) => {
                    return Err(map_server_error(&e, Phase::Stream, &self.info));
                }
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::Other(Message::ParameterStatus(_)) => {}
                other => {
                    return Err(unexpected(
                        &format!("{other:?}"),
                        "replication streaming",
                        &self.info,
                    ))
                }
            }
        }
        Ok(None)
    }

    /// Sends a standby status update: `write`, `flush` and `apply` positions
    /// (the slot's confirmed position advances to `flush`, so it must never
    /// be ahead of what the sink stored durably), the client clock, and
    /// whether the server should answer with a keepalive at once.
    pub async fn send_status_update(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        let update = StandbyStatusUpdate {
            write,
            flush,
            apply,
            client_time: pg_now_micros(),
            reply_requested,
        };
        // Encoded without awaiting, so a cancelled call leaves either the
        // whole message queued (sent with the next flush) or nothing.
        update.encode(self.framed.write_buffer_mut());
        tracing::trace!(%write, %flush, %apply, reply_requested, "standby status update");
        futures_util::SinkExt::flush(&mut self.framed)
            .await
            .map_err(|e| map_codec_error(e, &self.info))
    }

    /// Ends the stream (CopyDone) and the session (Terminate), then waits
    /// briefly for the server to close the socket, so the slot is released
    /// when this returns. Best effort: errors are only logged.
    pub async fn finish(mut self) {
        let mut codec = PgCodec::new();
        let buf = self.framed.write_buffer_mut();
        // Each direction of CopyBoth ends on its own: ours ends here even if
        // the server already sent its CopyDone. Neither message can fail to
        // encode.
        let _ = codec.encode(FrontendMessage::CopyDone, buf);
        let _ = codec.encode(FrontendMessage::Terminate, buf);
        terminate(&mut self.framed).await;
    }
}
