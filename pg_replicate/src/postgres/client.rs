//! The ordinary (non-replication) connection, used for catalog queries (the
//! backfill's `COPY` runs on [`CopyClient`](super::replication::CopyClient)):
//! tokio-postgres, configured from the same [`PgConnectionConfig`]
//! as the replication connection (TLS per `sslmode`, session settings,
//! `application_name`), with errors mapped to the same kinds.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{Connection, NoTls, Socket};

use super::replication::errors::{
    map_server_error, missing_password, tls_refused, ConnInfo, Phase, ServerError,
};
use super::{session, tls, PgConnectionConfig, SslMode};
use crate::{Error, ErrorKind, Result};

/// Connects an ordinary tokio-postgres client and spawns its connection
/// task (which logs its error, if any, when it ends).
///
/// `sslmode` maps to tokio-postgres's: `disable` (and any Unix socket) uses
/// no TLS, `prefer` tries TLS without verification, `require` requires it
/// without verification, `verify-full` requires it and verifies the
/// certificate chain and host name. Errors get the same kinds and hints as
/// [`ReplicationClient::connect`](super::replication::ReplicationClient::connect).
pub async fn connect_query_client(config: &PgConnectionConfig) -> Result<tokio_postgres::Client> {
    let info = ConnInfo::new(config);
    tokio::time::timeout(CONNECT_TIMEOUT, connect_query_client_now(config, &info))
        .await
        .map_err(|_| connect_timed_out(&info))?
}

/// How long connecting (TCP, TLS, authentication, start-up) may take: a
/// server or network that accepts the connection and then says nothing must
/// not hang the pipeline.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The error of a connection attempt that ran past [`CONNECT_TIMEOUT`].
pub(crate) fn connect_timed_out(info: &ConnInfo) -> Error {
    Error::new(
        ErrorKind::Connection,
        format!(
            "connecting to {} took longer than {} s; check that the server is up and reachable",
            info.endpoint,
            CONNECT_TIMEOUT.as_secs()
        ),
    )
}

async fn connect_query_client_now(
    config: &PgConnectionConfig,
    info: &ConnInfo,
) -> Result<tokio_postgres::Client> {
    let mut pg = tokio_postgres::Config::new();
    if config.is_unix_socket() {
        pg.host_path(&config.host);
    } else {
        pg.host(&config.host);
    }
    pg.port(config.port)
        .user(&config.username)
        .dbname(&config.dbname)
        .options(session::options_string())
        .application_name(config.application_name());
    if let Some(password) = &config.password {
        pg.password(password.as_bytes());
    }

    let client = if config.is_unix_socket() || config.ssl_mode == SslMode::Disable {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| map_client_error(e, info, Phase::Connect))?;
        spawn_connection(connection, info);
        client
    } else {
        pg.ssl_mode(match config.ssl_mode {
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let connector = tls::MakeRustlsConnect::from_config(config)?;
        let (client, connection) = pg
            .connect(connector)
            .await
            .map_err(|e| map_client_error(e, info, Phase::Connect))?;
        spawn_connection(connection, info);
        client
    };
    tracing::debug!(endpoint = %info.endpoint, "query connection established");
    Ok(client)
}

fn spawn_connection<T>(connection: Connection<Socket, T>, info: &ConnInfo)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let endpoint = info.endpoint.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(%endpoint, error = %e, "query connection failed");
        }
    });
}

/// Maps an error of a tokio-postgres client to the crate's error, with the
/// same SQLSTATE → kind mapping and hints as the replication connection.
/// `phase` is [`Phase::Connect`] while connecting and [`Phase::Query`] for
/// statements.
pub fn map_client_error(err: tokio_postgres::Error, info: &ConnInfo, phase: Phase) -> Error {
    if let Some(db) = err.as_db_error() {
        return map_server_error(&ServerError::from_db_error(db), phase, info);
    }
    if let Some(e) = tls::certificate_error(&err, info) {
        return e;
    }
    let text = chain_text(&err);
    if text.contains("password missing") {
        return missing_password(info, "password");
    }
    if text.contains("server does not support TLS") {
        return tls_refused(info);
    }
    if err.is_closed() || has_io_error(&err) {
        let message = if phase == Phase::Connect {
            format!(
                "could not connect to {}: {text}; check that the server is running and \
                 reachable at this address and port",
                info.endpoint
            )
        } else {
            format!("the connection to {} broke: {text}; retry", info.endpoint)
        };
        return Error::new(ErrorKind::Connection, message);
    }
    let kind = match phase {
        Phase::Connect => ErrorKind::Connection,
        Phase::Query | Phase::Stream => ErrorKind::Protocol,
    };
    Error::new(kind, format!("{}: {text}", info.endpoint))
}

/// The error's text followed by the texts of its causes (tokio-postgres
/// keeps the interesting part, such as the I/O error, in the cause).
fn chain_text(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

fn has_io_error(err: &tokio_postgres::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = current {
        if e.is::<io::Error>() {
            return true;
        }
        current = e.source();
    }
    false
}
