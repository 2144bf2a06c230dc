//! TLS (rustls) for every connection this library opens: the client
//! configuration derived from [`PgConnectionConfig::ssl_mode`], the verifier
//! that accepts any certificate (`prefer`, `require`), root loading for
//! `verify-full`, and a [`MakeTlsConnect`] for tokio-postgres so the ordinary
//! query connection honours the same `sslmode`.
//!
//! The meaning of the modes follows libpq: `prefer` and `require` encrypt but
//! do not authenticate the server (the handshake signature is still checked
//! against the certificate the server presents); `verify-full` checks that the
//! certificate chains to a trusted root and names the host. Unix sockets never
//! use TLS.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::config::{PgConnectionConfig, SslMode};
use super::replication::errors::ConnInfo;
use crate::{Error, ErrorKind, Result};

/// ALPN protocol name Postgres 17+ expects; older servers ignore it.
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `config.ssl_mode`:
/// certificate verification only for [`SslMode::VerifyFull`], against
/// `config.ssl_root_cert` or, when unset, the bundled web roots.
///
/// The configuration is built explicitly with the `ring` provider, so it
/// does not depend on a process-wide default provider.
pub fn client_config(config: &PgConnectionConfig) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            Error::with_source(ErrorKind::Config, "cannot build the TLS configuration", e)
        })?;
    let mut tls = match config.ssl_mode {
        SslMode::VerifyFull => {
            let pinned = match &config.ssl_root_cert {
                Some(path) => read_pem_certificates(path)?,
                None => Vec::new(),
            };
            let verifier = VerifyFullVerifier::new(&provider, pinned)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier::new(&provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(tls))
}

/// Loads trusted roots: every certificate of the PEM file at `path`, or the
/// bundled web roots (webpki-roots) when `path` is `None`.
pub fn load_root_store(path: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match path {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => add_roots(&mut roots, &read_pem_certificates(path)?, path)?,
    }
    Ok(roots)
}

fn add_roots(
    roots: &mut RootCertStore,
    certs: &[CertificateDer<'static>],
    path: &Path,
) -> Result<()> {
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "ssl_root_cert file {} holds a certificate rustls cannot use",
                    path.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Every certificate of the PEM file at `path` (at least one).
fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot open ssl_root_cert file {shown}; check the path and its permissions"),
            e,
        )
    })?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("cannot read ssl_root_cert file {shown} as PEM certificates"),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "ssl_root_cert file {shown} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
            ),
        ));
    }
    Ok(certs)
}

/// The TLS server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("host `{host}` is neither a DNS name nor an IP address usable for TLS"),
            e,
        )
    })
}

/// Runs the TLS handshake over `stream`.
pub async fn handshake<S>(
    stream: S,
    tls: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
}

/// Maps a failed TLS handshake: a certificate that does not verify is a
/// configuration problem ([`ErrorKind::Config`]), anything else a
/// connection problem.
pub fn map_handshake_error(err: io::Error, info: &ConnInfo) -> Error {
    if let Some(e) = certificate_error(&err, info) {
        return e;
    }
    Error::new(
        ErrorKind::Connection,
        format!(
            "the TLS handshake with {} failed: {err}; check the server's TLS setup, or use \
             sslmode=disable if the network is trusted",
            info.endpoint
        ),
    )
}

/// If `err` (an I/O error of a TLS stream, or any error whose source chain
/// holds one) is a certificate that failed verification, the
/// [`ErrorKind::Config`] error naming the fix.
pub fn certificate_error(
    err: &(dyn std::error::Error + 'static),
    info: &ConnInfo,
) -> Option<Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(reason)) = rustls_error {
            return Some(Error::new(
                ErrorKind::Config,
                format!(
                    "the TLS certificate of {} failed verification ({reason:?}); set \
                     ssl_root_cert to the PEM file of the CA that signed it and make sure the \
                     certificate names the host, or use sslmode=require to encrypt without \
                     verifying",
                    info.endpoint
                ),
            ));
        }
        current = e.source();
    }
    None
}

/// A certificate verifier that accepts any server certificate, as libpq does
/// for `sslmode=prefer` and `require`. The handshake signatures are still
/// checked against the presented certificate, so the session keys belong to
/// whoever holds that certificate's key; that party is not authenticated.
pub struct NoVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NoVerifier {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> NoVerifier {
        NoVerifier {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for NoVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerifier")
    }
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The verifier of `sslmode=verify-full`: the certificate must chain to a
/// trusted root (the `ssl_root_cert` file, else the web roots) and name the
/// host. As with libpq, a certificate that appears verbatim in the
/// `ssl_root_cert` file is trusted as itself — the usual self-signed server
/// certificate, which webpki would otherwise reject as a CA used as an end
/// entity — and is still checked against the host name.
pub struct VerifyFullVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl VerifyFullVerifier {
    /// Trusts the certificates `pinned` (from the `ssl_root_cert` file) as
    /// roots and as themselves, or the web roots when `pinned` is empty.
    pub fn new(
        provider: &Arc<CryptoProvider>,
        pinned: Vec<CertificateDer<'static>>,
    ) -> Result<VerifyFullVerifier> {
        let mut roots = RootCertStore::empty();
        if pinned.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            add_roots(&mut roots, &pinned, Path::new("ssl_root_cert"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    "cannot build the TLS certificate verifier",
                    e,
                )
            })?;
        Ok(VerifyFullVerifier { webpki, pinned })
    }
}

impl fmt::Debug for VerifyFullVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyFullVerifier")
            .field("pinned", &self.pinned.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for VerifyFullVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(e) => {
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref())
                {
                    let parsed = ParsedCertificate::try_from(end_entity)?;
                    verify_server_name(&parsed, server_name)?;
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// tokio-postgres TLS connector backed by rustls.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl MakeRustlsConnect {
    /// A connector using `config` for every connection.
    pub fn new(config: Arc<ClientConfig>) -> MakeRustlsConnect {
        MakeRustlsConnect { config }
    }

    /// A connector for the `sslmode` of `config` (see [`client_config`]).
    pub fn from_config(config: &PgConnectionConfig) -> Result<MakeRustlsConnect> {
        Ok(MakeRustlsConnect::new(client_config(config)?))
    }
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MakeRustlsConnect")
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

/// A pending TLS connection for one host (tokio-postgres [`TlsConnect`]).
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            handshake(stream, self.config, self.name)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

/// An established TLS stream (tokio-postgres [`TlsStream`]).
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S> TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// No `tls-server-end-point` binding: SCRAM runs without channel binding
    /// (`SCRAM-SHA-256`, gs2 flag `n`), which every server accepts.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: SslMode) -> PgConnectionConfig {
        PgConnectionConfig {
            host: "localhost".into(),
            port: 5432,
            dbname: "d".into(),
            username: "u".into(),
            password: None,
            ssl_mode: mode,
            ssl_root_cert: None,
            application_name: None,
        }
    }

    #[test]
    fn builds_configs_for_every_mode() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyFull,
        ] {
            let tls = client_config(&config(mode)).unwrap();
            assert_eq!(tls.alpn_protocols, vec![b"postgresql".to_vec()]);
        }
    }

    #[test]
    fn missing_or_empty_root_file_is_a_config_error() {
        let mut c = config(SslMode::VerifyFull);
        c.ssl_root_cert = Some("/nonexistent/root.crt".into());
        let err = client_config(&c).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("/nonexistent/root.crt"));

        let dir = std::env::temp_dir().join(format!("pg_replicate_tls_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        c.ssl_root_cert = Some(empty);
        let err = client_config(&c).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("no PEM certificate"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_names() {
        assert!(server_name("db.example.com").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert_eq!(
            server_name("bad host!").unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
