//! Opening the socket of the replication connection: TCP or Unix socket,
//! then TLS negotiation (`SSLRequest`) per `sslmode`, with libpq's semantics.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use super::codec::{BackendMessage, FrontendMessage, PgCodec};
use super::errors::{
    closed_unexpectedly, map_codec_error, map_connect_io_error, tls_refused, ConnInfo,
};
use crate::postgres::config::{PgConnectionConfig, SslMode};
use crate::postgres::tls;
use crate::{Error, ErrorKind, Result};

/// The socket under the protocol: plain TCP, a Unix socket, or TLS over TCP.
pub enum MaybeTlsStream {
    /// Unencrypted TCP.
    Tcp(TcpStream),
    /// Unix-domain socket (never encrypted).
    #[cfg(unix)]
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl MaybeTlsStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTlsStream::Tls(_))
    }
}

/// What the server answered to `SSLRequest`.
enum SslAnswer {
    Accepted,
    Refused,
    Error,
}

/// Opens the socket and negotiates TLS as `config.ssl_mode` asks.
///
/// `prefer` falls back to an unencrypted connection when the server refuses
/// TLS or the handshake fails (opening a fresh socket for the latter), as
/// libpq does; `require` and `verify-full` fail instead.
pub async fn open(config: &PgConnectionConfig, info: &ConnInfo) -> Result<MaybeTlsStream> {
    if config.is_unix_socket() {
        return open_unix(config, info).await;
    }
    if config.ssl_mode == SslMode::Disable {
        return Ok(MaybeTlsStream::Tcp(open_tcp(config, info).await?));
    }
    let tls_config = tls::client_config(config)?;
    let name = tls::server_name(&config.host)?;
    let mut tcp = open_tcp(config, info).await?;
    let answer = request_ssl(&mut tcp).await.map_err(|e| {
        Error::new(
            ErrorKind::Connection,
            format!("TLS negotiation with {} failed: {e}; retry", info.endpoint),
        )
    })?;
    let prefer = config.ssl_mode == SslMode::Prefer;
    match answer {
        SslAnswer::Accepted => match tls::handshake(tcp, tls_config, name).await {
            Ok(stream) => Ok(MaybeTlsStream::Tls(Box::new(stream))),
            Err(e) if prefer => {
                tracing::warn!(
                    endpoint = %info.endpoint,
                    error = %e,
                    "TLS handshake failed with sslmode=prefer; reconnecting without TLS"
                );
                Ok(MaybeTlsStream::Tcp(open_tcp(config, info).await?))
            }
            Err(e) => Err(tls::map_handshake_error(e, info)),
        },
        SslAnswer::Refused if prefer => {
            tracing::debug!(endpoint = %info.endpoint, "server refused TLS; continuing without");
            Ok(MaybeTlsStream::Tcp(tcp))
        }
        SslAnswer::Error if prefer => Ok(MaybeTlsStream::Tcp(open_tcp(config, info).await?)),
        SslAnswer::Refused | SslAnswer::Error => Err(tls_refused(info)),
    }
}

async fn open_tcp(config: &PgConnectionConfig, info: &ConnInfo) -> Result<TcpStream> {
    let stream = TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|e| map_connect_io_error(e, info, false))?;
    // Small protocol messages (status updates) must not wait for Nagle.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

#[cfg(unix)]
async fn open_unix(config: &PgConnectionConfig, info: &ConnInfo) -> Result<MaybeTlsStream> {
    let stream = UnixStream::connect(config.unix_socket_path())
        .await
        .map_err(|e| map_connect_io_error(e, info, true))?;
    Ok(MaybeTlsStream::Unix(stream))
}

#[cfg(not(unix))]
async fn open_unix(_config: &PgConnectionConfig, info: &ConnInfo) -> Result<MaybeTlsStream> {
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{} is a Unix socket, which this platform does not have; use a host name",
            info.endpoint
        ),
    ))
}

/// Sends `SSLRequest` and reads exactly the one-byte answer, so no
/// unencrypted byte after it can be mistaken for part of the TLS stream.
async fn request_ssl(tcp: &mut TcpStream) -> io::Result<SslAnswer> {
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => Ok(SslAnswer::Accepted),
        b'N' => Ok(SslAnswer::Refused),
        // A server that does not understand SSLRequest answers with an
        // ErrorResponse and closes the connection.
        b'E' => Ok(SslAnswer::Error),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer 0x{other:02x} to SSLRequest"),
        )),
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTlsStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => s.is_write_vectored(),
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            MaybeTlsStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The framed protocol connection.
pub type PgFramed = Framed<MaybeTlsStream, PgCodec>;

/// Reads the next message; the end of the stream is an error here.
pub async fn recv(framed: &mut PgFramed, info: &ConnInfo) -> Result<BackendMessage> {
    match framed.next().await {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(map_codec_error(e, info)),
        None => Err(closed_unexpectedly(info)),
    }
}

/// Encodes `message` and flushes it to the socket.
pub async fn send(
    framed: &mut PgFramed,
    message: FrontendMessage<'_>,
    info: &ConnInfo,
) -> Result<()> {
    framed
        .send(message)
        .await
        .map_err(|e| map_codec_error(e, info))
}
