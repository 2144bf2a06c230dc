//! OAuth tokens for BigQuery: from a service account key, or none for an
//! emulator. Both REST and Storage Write requests take their token here.

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::yup_oauth2;

use super::config::BigQueryCredentials;
use crate::{Error, ErrorKind, Result};

/// The OAuth scope of BigQuery reads and writes.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

type YupAuthenticator = yup_oauth2::authenticator::Authenticator<
    yup_oauth2::hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

/// Tokens of a service account, refreshed by `yup-oauth2` before they
/// expire.
#[derive(Clone)]
struct ServiceAccount {
    inner: YupAuthenticator,
}

#[async_trait]
impl Authenticator for ServiceAccount {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.inner.token(&[SCOPE]).await?;
        token.token().map(str::to_owned).ok_or(BQError::NoToken)
    }
}

/// No token, for emulators that check none.
#[derive(Clone)]
struct NoToken;

#[async_trait]
impl Authenticator for NoToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok(String::new())
    }
}

/// The authenticator of `credentials`. Fails with [`ErrorKind::Config`]
/// when a key file cannot be read or is not a service account key; the
/// key's content is never part of the message.
pub async fn authenticator(credentials: &BigQueryCredentials) -> Result<Arc<dyn Authenticator>> {
    let key = match credentials {
        BigQueryCredentials::None => return Ok(Arc::new(NoToken)),
        BigQueryCredentials::ServiceAccountKeyFile(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!(
                        "cannot read the BigQuery service account key file {}; give the path of the JSON \
                         key downloaded from the Cloud console (IAM → Service accounts → Keys)",
                        path.display()
                    ),
                    e,
                )
            })?;
            parse_key(&text, &path.display().to_string())?
        }
        BigQueryCredentials::ServiceAccountKey(text) => {
            parse_key(text, "given in the configuration")?
        }
    };
    let inner = yup_oauth2::ServiceAccountAuthenticator::builder(key)
        .build()
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the BigQuery service account key is not usable ({}); download a new key for the service \
                     account",
                    e.kind()
                ),
            )
        })?;
    Ok(Arc::new(ServiceAccount { inner }))
}

fn parse_key(text: &str, origin: &str) -> Result<yup_oauth2::ServiceAccountKey> {
    let key = yup_oauth2::parse_service_account_key(text).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!(
                "the BigQuery service account key {origin} is not a service account key (a JSON object with \
                 type \"service_account\", client_email, private_key and token_uri); download the JSON key \
                 of the service account from the Cloud console"
            ),
        )
    })?;
    if !key.private_key.contains("PRIVATE KEY-----") {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the private_key of the BigQuery service account key {origin} is not a PEM private key; \
                 download a new key for the service account"
            ),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_files_that_are_not_keys_are_refused_without_echoing_them() {
        let dir = std::env::temp_dir().join(format!("pgr-bq-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let error = authenticator(&BigQueryCredentials::ServiceAccountKeyFile(missing))
            .await
            .err()
            .unwrap();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.message().contains("cannot read"), "{error}");

        let garbage = dir.join("garbage.json");
        std::fs::write(&garbage, "secret-looking garbage").unwrap();
        let error = authenticator(&BigQueryCredentials::ServiceAccountKeyFile(garbage))
            .await
            .err()
            .unwrap();
        assert!(
            error.message().contains("not a service account key"),
            "{error}"
        );
        assert!(!error.to_string().contains("secret-looking"));

        let bad_pem = serde_json::json!({
            "type": "service_account",
            "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key": "not a key",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        let error = authenticator(&BigQueryCredentials::ServiceAccountKey(bad_pem.to_string()))
            .await
            .err()
            .unwrap();
        assert!(error.message().contains("not a PEM private key"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn no_credentials_send_no_token() {
        let auth = authenticator(&BigQueryCredentials::None).await.unwrap();
        assert_eq!(auth.access_token().await.unwrap(), "");
    }
}
