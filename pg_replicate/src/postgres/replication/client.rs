//! [`ReplicationClient`]: a walsender connection (`replication=database`)
//! in command mode.

use std::time::Duration;

use fallible_iterator::FallibleIterator;
use futures_util::{SinkExt, StreamExt};
use postgres_protocol::message::backend::{DataRowBody, Message};
use tokio_util::codec::{Encoder, Framed};

use super::auth;
use super::codec::{BackendMessage, FrontendMessage, PgCodec};
use super::commands::{self, CreatedSlot, IdentifySystem};
use super::errors::{map_codec_error, map_server_error, unexpected, ConnInfo, Phase};
use super::stream::ReplicationStream;
use super::transport::{self, recv, PgFramed};
use crate::postgres::{session, PgConnectionConfig};
use crate::types::Lsn;
use crate::{Error, ErrorKind, Result};

/// Initial size of the read buffer. Frames are split off it without copying,
/// so it is refilled in chunks of about this size.
pub(super) const READ_BUFFER_CAPACITY: usize = 64 * 1024;

/// How long `close`/`finish` wait for the server to close the socket after
/// `Terminate`, so that the walsender (and the slot it holds) is gone when
/// they return.
pub(super) const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// Default `application_name` of the connections this library opens.
pub const APPLICATION_NAME: &str = "pg_replicate";

/// A logical replication connection in command mode: runs replication
/// commands (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, SQL) and turns
/// into a [`ReplicationStream`] with [`start_replication`](Self::start_replication).
///
/// A command interrupted by cancellation (its future dropped) leaves its
/// answer unread; the next command reads and discards it first.
pub struct ReplicationClient {
    framed: PgFramed,
    info: ConnInfo,
    parameters: Vec<(String, String)>,
    backend_pid: Option<i32>,
    /// `ReadyForQuery` messages still owed by the server for commands whose
    /// answers were not (fully) read.
    pending_ready: usize,
    /// Set once the connection is unusable (socket error, protocol error).
    broken: bool,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("info", &self.info)
            .field("backend_pid", &self.backend_pid)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// Connects, negotiates TLS per `config.ssl_mode`, authenticates and
    /// waits until the server is ready for commands.
    ///
    /// The startup packet asks for `replication=database` on
    /// `config.dbname`, sets `application_name` (`pg_replicate` unless set) and the
    /// session settings of [`session::SESSION_SETTINGS`].
    pub async fn connect(config: &PgConnectionConfig) -> Result<ReplicationClient> {
        let session = start_session(config, true).await?;
        tracing::info!(
            endpoint = %session.info.endpoint,
            tls = session.framed.get_ref().is_tls(),
            backend_pid = session.backend_pid,
            server_version = session.parameter("server_version").unwrap_or("?"),
            "replication connection established"
        );
        Ok(ReplicationClient {
            framed: session.framed,
            info: session.info,
            parameters: session.parameters,
            backend_pid: session.backend_pid,
            pending_ready: 0,
            broken: false,
        })
    }

    /// A run-time parameter the server reported (`server_version`,
    /// `TimeZone`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server version as `server_version_num` (for example 150008).
    pub fn server_version_num(&self) -> Option<u32> {
        self.parameter("server_version")
            .and_then(commands::parse_server_version_num)
    }

    /// Process ID of the walsender serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.framed.get_ref().is_tls()
    }

    /// Runs `sql` (one or more commands) with the simple query protocol and
    /// returns the rows in text form. An error from the server becomes an
    /// [`ErrorKind::SourceSetup`] error (or the kind its SQLSTATE calls for)
    /// carrying the server's message and SQLSTATE; the connection stays
    /// usable after it.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let result = self.run_query(sql).await;
        if let Err(e) = &result {
            if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Protocol) {
                self.broken = true;
            }
        }
        result
    }

    /// `IDENTIFY_SYSTEM`: cluster identifier, timeline, WAL position and
    /// database.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        commands::parse_identify_system(&rows).map_err(|m| self.protocol_error(m))
    }

    /// Creates a logical slot using pgoutput and exports a snapshot of the
    /// database as of the slot's consistent point
    /// (`CREATE_REPLICATION_SLOT "name" [TEMPORARY] LOGICAL pgoutput
    /// EXPORT_SNAPSHOT`).
    ///
    /// The snapshot stays valid until the next command on this connection:
    /// keep the connection idle while other connections use it with
    /// `SET TRANSACTION SNAPSHOT`. A temporary slot is dropped when this
    /// connection ends.
    pub async fn create_logical_slot(
        &mut self,
        slot_name: &str,
        temporary: bool,
    ) -> Result<CreatedSlot> {
        let sql = commands::create_slot_command(slot_name, temporary);
        let rows = self
            .simple_query(&sql)
            .await
            .map_err(|e| e.context(format!("creating replication slot \"{slot_name}\"")))?;
        let slot = commands::parse_created_slot(&rows).map_err(|m| self.protocol_error(m))?;
        tracing::info!(
            slot = %slot.slot_name,
            consistent_point = %slot.consistent_point,
            temporary,
            "created replication slot"
        );
        Ok(slot)
    }

    /// Starts streaming changes of `publication` from `slot_name` with
    /// pgoutput protocol `protocol_version`, from `start` (or where the slot
    /// stands, if that is later; [`Lsn::ZERO`] means "where the slot
    /// stands"). From protocol 2 on, in-progress transactions are streamed
    /// (`streaming 'on'`).
    ///
    /// A missing slot, a slot used by another connection (its PID is in the
    /// message) or `wal_level` below `logical` fail here with
    /// [`ErrorKind::SourceSetup`]; a missing publication only fails when the
    /// server decodes the first change, as an error from
    /// [`ReplicationStream::next_message`].
    pub async fn start_replication(
        self,
        slot_name: &str,
        start: Lsn,
        publication: &str,
        protocol_version: u32,
    ) -> Result<ReplicationStream> {
        let options = commands::pgoutput_options(publication, protocol_version);
        self.start_replication_with_options(slot_name, start, &options)
            .await
    }

    /// Like [`start_replication`](Self::start_replication) with explicit
    /// output-plugin options (`(name, value)`, quoted here), for example to
    /// add `("messages", "true")` on servers that have it.
    pub async fn start_replication_with_options(
        mut self,
        slot_name: &str,
        start: Lsn,
        options: &[(String, String)],
    ) -> Result<ReplicationStream> {
        let sql = commands::start_replication_command(slot_name, start, options);
        let context = format!("starting replication from slot \"{slot_name}\" at {start}");
        self.prepare().await.map_err(|e| e.context(&context))?;
        self.queue(FrontendMessage::Query(&sql))?;
        self.flush().await?;
        loop {
            match recv(&mut self.framed, &self.info).await? {
                BackendMessage::CopyBothResponse => {
                    tracing::info!(slot = slot_name, %start, "replication started");
                    return Ok(ReplicationStream::new(self.framed, self.info));
                }
                BackendMessage::ErrorResponse(e) => {
                    return Err(map_server_error(&e, Phase::Query, &self.info).context(&context));
                }
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::Other(Message::ParameterStatus(_)) => {}
                other => {
                    return Err(unexpected(
                        &format!("{other:?}"),
                        "START_REPLICATION",
                        &self.info,
                    ))
                }
            }
        }
    }

    /// Ends the session (`Terminate`) and waits briefly for the server to
    /// close the socket, so a temporary slot is gone when this returns.
    pub async fn close(mut self) {
        if self.queue(FrontendMessage::Terminate).is_ok() {
            terminate(&mut self.framed).await;
        }
    }

    async fn run_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.prepare().await?;
        self.queue(FrontendMessage::Query(sql))?;
        self.pending_ready += 1;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match recv(&mut self.framed, &self.info).await? {
                BackendMessage::Other(Message::DataRow(body)) => {
                    if error.is_none() {
                        rows.push(self.decode_row(&body)?);
                    }
                }
                BackendMessage::Other(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse,
                ) => {}
                BackendMessage::Other(Message::ReadyForQuery(_)) => {
                    self.pending_ready -= 1;
                    break;
                }
                BackendMessage::Other(Message::ParameterStatus(body)) => {
                    set_parameter(&mut self.parameters, body.name(), body.value());
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(n) => log_notice(&n),
                BackendMessage::CopyBothResponse
                | BackendMessage::Other(Message::CopyInResponse(_) | Message::CopyOutResponse(_)) =>
                {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "simple_query cannot run a command that starts a copy; use \
                         start_replication for START_REPLICATION and an ordinary connection \
                         for COPY",
                    ));
                }
                other => return Err(unexpected(&format!("{other:?}"), "a query", &self.info)),
            }
        }
        match error {
            Some(e) => Err(map_server_error(&e, Phase::Query, &self.info)),
            None => Ok(rows),
        }
    }

    /// Fails on a broken connection, and reads the leftovers of commands
    /// whose futures were dropped.
    async fn prepare(&mut self) -> Result<()> {
        if self.broken {
            return Err(Error::new(
                ErrorKind::Connection,
                format!(
                    "the replication connection to {} failed earlier and cannot be used; \
                     open a new one",
                    self.info.endpoint
                ),
            ));
        }
        if self.pending_ready == 0 {
            return Ok(());
        }
        tracing::debug!(
            pending = self.pending_ready,
            "discarding answers of interrupted commands"
        );
        self.flush().await?;
        while self.pending_ready > 0 {
            match recv(&mut self.framed, &self.info).await {
                Ok(BackendMessage::Other(Message::ReadyForQuery(_))) => self.pending_ready -= 1,
                Ok(
                    BackendMessage::CopyBothResponse
                    | BackendMessage::Other(Message::CopyInResponse(_) | Message::CopyOutResponse(_)),
                ) => {
                    self.broken = true;
                    return Err(unexpected("copy start", "recovery", &self.info));
                }
                Ok(_) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Encodes `message` into the write buffer, without awaiting: the
    /// message is either wholly queued or not at all.
    fn queue(&mut self, message: FrontendMessage<'_>) -> Result<()> {
        let mut codec = PgCodec::new();
        codec
            .encode(message, self.framed.write_buffer_mut())
            .map_err(|e| map_codec_error(e, &self.info))
    }

    async fn flush(&mut self) -> Result<()> {
        let result = self.framed.flush().await;
        result.map_err(|e| {
            self.broken = true;
            map_codec_error(e, &self.info)
        })
    }

    fn decode_row(&self, body: &DataRowBody) -> Result<Vec<Option<String>>> {
        let buffer = body.buffer();
        let mut ranges = body.ranges();
        let mut row = Vec::new();
        while let Some(range) = ranges
            .next()
            .map_err(|e| self.protocol_error(format!("malformed DataRow: {e}")))?
        {
            row.push(match range {
                Some(range) => {
                    let bytes = buffer
                        .get(range)
                        .ok_or_else(|| self.protocol_error("DataRow value out of bounds".into()))?;
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                None => None,
            });
        }
        Ok(row)
    }

    fn protocol_error(&self, message: String) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!("{}: {message}", self.info.endpoint),
        )
    }
}

/// A session just started: authenticated and ready for commands.
pub(super) struct Session {
    pub(super) framed: PgFramed,
    pub(super) info: ConnInfo,
    pub(super) parameters: Vec<(String, String)>,
    pub(super) backend_pid: Option<i32>,
}

impl Session {
    /// A run-time parameter the server reported.
    pub(super) fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Connects, negotiates TLS per `config.ssl_mode`, authenticates and waits
/// until the server is ready for commands. The startup packet asks for
/// `replication=database` when `replication` is set, names the database,
/// sets `application_name` and the session settings of
/// [`session::SESSION_SETTINGS`].
pub(super) async fn start_session(
    config: &PgConnectionConfig,
    replication: bool,
) -> Result<Session> {
    let info = ConnInfo::new(config);
    tokio::time::timeout(
        crate::postgres::client::CONNECT_TIMEOUT,
        start_session_now(config, replication),
    )
    .await
    .map_err(|_| crate::postgres::client::connect_timed_out(&info))?
}

async fn start_session_now(config: &PgConnectionConfig, replication: bool) -> Result<Session> {
    let info = ConnInfo::new(config);
    if config.username.is_empty() || config.dbname.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "connecting to {} needs a user name and a database name; set both",
                info.endpoint
            ),
        ));
    }
    let stream = transport::open(config, &info).await?;
    let mut framed = Framed::with_capacity(stream, PgCodec::new(), READ_BUFFER_CAPACITY);

    let options = session::options_string();
    let mut params = vec![
        ("user", config.username.as_str()),
        ("database", config.dbname.as_str()),
        ("application_name", config.application_name()),
        ("options", options.as_str()),
    ];
    if replication {
        params.push(("replication", "database"));
    }
    transport::send(&mut framed, FrontendMessage::Startup(&params), &info).await?;
    auth::authenticate(&mut framed, config, &info).await?;

    let mut parameters = Vec::new();
    let mut backend_pid = None;
    loop {
        match recv(&mut framed, &info).await? {
            BackendMessage::Other(Message::ReadyForQuery(_)) => break,
            BackendMessage::Other(Message::ParameterStatus(body)) => {
                set_parameter(&mut parameters, body.name(), body.value());
            }
            BackendMessage::Other(Message::BackendKeyData(body)) => {
                backend_pid = Some(body.process_id());
            }
            BackendMessage::ErrorResponse(e) => {
                return Err(map_server_error(&e, Phase::Connect, &info));
            }
            BackendMessage::NoticeResponse(n) => log_notice(&n),
            other => return Err(unexpected(&format!("{other:?}"), "session start", &info)),
        }
    }
    Ok(Session {
        framed,
        info,
        parameters,
        backend_pid,
    })
}

fn set_parameter(
    parameters: &mut Vec<(String, String)>,
    name: std::io::Result<&str>,
    value: std::io::Result<&str>,
) {
    let (Ok(name), Ok(value)) = (name, value) else {
        return;
    };
    match parameters.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_owned(),
        None => parameters.push((name.to_owned(), value.to_owned())),
    }
}

/// Logs a server notice: severity, code and message (server text only).
pub(super) fn log_notice(notice: &super::errors::ServerError) {
    tracing::info!(
        severity = %notice.severity,
        code = %notice.code,
        message = %notice.message,
        "server notice"
    );
}

/// Flushes what is queued (ending with `Terminate`) and reads until the
/// server closes the socket, at most [`TERMINATE_WAIT`]. Best effort.
pub(super) async fn terminate(framed: &mut PgFramed) {
    let wait = async {
        if let Err(e) = framed.flush().await {
            tracing::debug!(error = %e, "could not send Terminate");
            return;
        }
        while let Some(Ok(_)) = framed.next().await {}
    };
    if tokio::time::timeout(TERMINATE_WAIT, wait).await.is_err() {
        tracing::debug!("server did not close the connection after Terminate in time");
    }
}
