//! A minimal HTTP/1.1 server for the examples' status endpoints: `GET`
//! requests only, one response per connection, every read and write under
//! a deadline so a stuck client cannot hold a task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A response: status code, content type and body.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    /// A response of `status` with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A `200` response with a JSON body.
    pub fn json(body: String) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
}

/// Answers a request for a path.
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Deadline of reading a request and writing its response.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Listens on `addr` and answers `GET` requests with `handler` until
/// `cancel` fires. Fails when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    handler: Handler,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(IO_DEADLINE, answer(stream, handler)).await;
            });
        }
    }))
}

async fn answer(mut stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await?;
        if read == 0 || head.len() + read > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let response = match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => {
            let path = target.split('?').next().unwrap_or(target);
            handler(path)
        }
        _ => Response::text(405, "only GET is served\n"),
    };
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let message = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        response.content_type,
        response.body.len(),
        response.body
    );
    stream.write_all(message.as_bytes()).await?;
    stream.shutdown().await
}
