//! [`SnowflakeConfig`]: the account, the user and how it logs in, and
//! where the REST API is.

use std::path::Path;
use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// How the client logs in. `Debug` never shows the secrets.
#[derive(Clone)]
pub enum SnowflakeCredentials {
    /// Key-pair authentication: a PKCS#8 PEM private key (`BEGIN PRIVATE
    /// KEY`, or `BEGIN ENCRYPTED PRIVATE KEY` with its passphrase) whose
    /// public key is set on the user (`ALTER USER … SET RSA_PUBLIC_KEY`).
    KeyPair {
        /// The PEM text of the private key.
        private_key_pem: String,
        /// The passphrase of an encrypted key.
        passphrase: Option<String>,
    },
    /// The user's password.
    Password(String),
}

impl SnowflakeCredentials {
    /// Key-pair credentials from a PEM key file.
    pub fn key_pair_file(path: impl AsRef<Path>, passphrase: Option<String>) -> Result<Self> {
        let path = path.as_ref();
        let private_key_pem = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!(
                    "cannot read the Snowflake private key file {}",
                    path.display()
                ),
                e,
            )
        })?;
        Ok(Self::KeyPair {
            private_key_pem,
            passphrase,
        })
    }
}

impl std::fmt::Debug for SnowflakeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyPair { passphrase, .. } => f
                .debug_struct("KeyPair")
                .field("private_key_pem", &"<redacted>")
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::Password(_) => f.debug_tuple("Password").field(&"<redacted>").finish(),
        }
    }
}

/// Where and as whom the Snowflake client connects.
#[derive(Clone, Debug)]
pub struct SnowflakeConfig {
    pub(crate) account: String,
    pub(crate) user: String,
    pub(crate) credentials: SnowflakeCredentials,
    pub(crate) base_url: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) warehouse: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) query_timeout: Duration,
    pub(crate) request_attempts: u32,
}

impl SnowflakeConfig {
    /// `user` of `account` (the account identifier: `myorg-myaccount`, or a
    /// locator with its region such as `xy12345.us-east-1`).
    pub fn new(
        account: impl Into<String>,
        user: impl Into<String>,
        credentials: SnowflakeCredentials,
    ) -> Self {
        Self {
            account: account.into(),
            user: user.into(),
            credentials,
            base_url: None,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            request_timeout: Duration::from_secs(60),
            query_timeout: Duration::from_secs(3600),
            request_attempts: 6,
        }
    }

    /// The REST API's base URL instead of
    /// `https://<account>.snowflakecomputing.com` (an emulator, a private
    /// link host).
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The session's database.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The session's schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The session's warehouse.
    pub fn with_warehouse(mut self, warehouse: impl Into<String>) -> Self {
        self.warehouse = Some(warehouse.into());
        self
    }

    /// The session's role.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// How long one HTTP request may take (default 60 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How often a request is sent in all when it cannot be sent, times out
    /// or is answered HTTP 429 or 5xx (default 6: pauses of 0.5, 1, 2, 4
    /// and 8 s between them); at least 1.
    pub fn with_request_attempts(mut self, attempts: u32) -> Self {
        self.request_attempts = attempts.max(1);
        self
    }

    /// How long a query may run, polling included (default one hour).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The REST API's base URL, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!(
                "https://{}.snowflakecomputing.com",
                self.account.to_lowercase()
            ),
        }
    }
}
