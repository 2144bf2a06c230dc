//! Authentication of the replication connection: trust, cleartext password,
//! md5 and SCRAM-SHA-256 (without channel binding). The password is only
//! ever handed to the encoder; it is never logged nor put in an error.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{AuthenticationSaslBody, Message};

use super::codec::{BackendMessage, FrontendMessage};
use super::errors::{map_server_error, missing_password, unexpected, ConnInfo, Phase};
use super::transport::{recv, send, PgFramed};
use crate::postgres::PgConnectionConfig;
use crate::{Error, ErrorKind, Result};

/// Answers the server's authentication requests until `AuthenticationOk`.
pub async fn authenticate(
    framed: &mut PgFramed,
    config: &PgConnectionConfig,
    info: &ConnInfo,
) -> Result<()> {
    loop {
        match recv(framed, info).await? {
            BackendMessage::Other(Message::AuthenticationOk) => {
                tracing::debug!(endpoint = %info.endpoint, "authenticated");
                return Ok(());
            }
            BackendMessage::Other(Message::AuthenticationCleartextPassword) => {
                tracing::debug!("server asks for a cleartext password");
                let password = password(config, info, "password")?;
                send(framed, FrontendMessage::Password(password.as_bytes()), info).await?;
            }
            BackendMessage::Other(Message::AuthenticationMd5Password(body)) => {
                tracing::debug!("server asks for an md5 password");
                let password = password(config, info, "md5")?;
                let hash = md5_hash(config.username.as_bytes(), password.as_bytes(), body.salt());
                send(framed, FrontendMessage::Password(hash.as_bytes()), info).await?;
            }
            BackendMessage::Other(Message::AuthenticationSasl(body)) => {
                tracing::debug!("server asks for SASL authentication");
                scram(framed, &body, config, info).await?;
            }
            BackendMessage::Other(
                Message::AuthenticationKerberosV5
                | Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationScmCredential,
            ) => return Err(unsupported_method(info, "Kerberos/GSSAPI/SSPI/SCM")),
            BackendMessage::ErrorResponse(e) => {
                return Err(map_server_error(&e, Phase::Connect, info));
            }
            BackendMessage::NoticeResponse(n) => {
                tracing::info!(severity = %n.severity, code = %n.code, message = %n.message, "server notice");
            }
            other => return Err(unexpected(&format!("{other:?}"), "authentication", info)),
        }
    }
}

/// SCRAM-SHA-256 exchange. Channel binding is not offered (gs2 flag `n`),
/// so this works whether or not the connection uses TLS and whether or not
/// the server also offers `SCRAM-SHA-256-PLUS`.
async fn scram(
    framed: &mut PgFramed,
    body: &AuthenticationSaslBody,
    config: &PgConnectionConfig,
    info: &ConnInfo,
) -> Result<()> {
    let mut offered = Vec::new();
    let mut mechanisms = body.mechanisms();
    while let Some(mechanism) = mechanisms.next().map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "{} sent a malformed SASL mechanism list: {e}",
                info.endpoint
            ),
        )
    })? {
        offered.push(mechanism.to_owned());
    }
    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
        return Err(unsupported_method(
            info,
            &format!("SASL ({})", offered.join(", ")),
        ));
    }
    let password = password(config, info, "scram-sha-256")?;
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    send(
        framed,
        FrontendMessage::SaslInitialResponse {
            mechanism: sasl::SCRAM_SHA_256,
            data: scram.message(),
        },
        info,
    )
    .await?;

    match recv(framed, info).await? {
        BackendMessage::Other(Message::AuthenticationSaslContinue(body)) => {
            scram
                .update(body.data())
                .map_err(|e| scram_failed(info, &e.to_string()))?;
        }
        BackendMessage::ErrorResponse(e) => return Err(map_server_error(&e, Phase::Connect, info)),
        other => {
            return Err(unexpected(
                &format!("{other:?}"),
                "SCRAM authentication",
                info,
            ))
        }
    }
    send(framed, FrontendMessage::SaslResponse(scram.message()), info).await?;

    match recv(framed, info).await? {
        BackendMessage::Other(Message::AuthenticationSaslFinal(body)) => {
            scram.finish(body.data()).map_err(|e| {
                scram_failed(
                    info,
                    &format!(
                        "{e}; the server could not prove it knows the password, so it may not \
                         be the server you meant to reach"
                    ),
                )
            })?;
            Ok(())
        }
        BackendMessage::ErrorResponse(e) => Err(map_server_error(&e, Phase::Connect, info)),
        other => Err(unexpected(
            &format!("{other:?}"),
            "SCRAM authentication",
            info,
        )),
    }
}

/// The configured password, or a [`ErrorKind::Config`] error naming the
/// method the server asked for.
fn password<'a>(config: &'a PgConnectionConfig, info: &ConnInfo, method: &str) -> Result<&'a str> {
    config
        .password
        .as_deref()
        .ok_or_else(|| missing_password(info, method))
}

fn unsupported_method(info: &ConnInfo, method: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "the server at {} asks user \"{}\" for {method} authentication, which pg_replicate \
             does not support; use scram-sha-256, md5, password or trust for this user in \
             pg_hba.conf",
            info.endpoint, info.user
        ),
    )
}

fn scram_failed(info: &ConnInfo, reason: &str) -> Error {
    Error::new(
        ErrorKind::Authentication,
        format!(
            "SCRAM-SHA-256 authentication of user \"{}\" at {} failed: {reason}",
            info.user, info.endpoint
        ),
    )
}
