//! A destination row (`type` and JSON `config`) as a sink configuration,
//! checked when read, and the sink it opens when its pipeline runs.

use serde_json::{Map, Value};

use crate::pipeline::manager::ManagedRun;
use crate::pipeline::{DataPipeline, PipelineAction};
use crate::sinks::stdout::StdoutSink;
use crate::sources::postgres::PostgresSource;
use crate::transform::{TransformSink, Transforms};
use crate::{Error, ErrorKind, Result};

/// The destination types this build knows (others need their cargo
/// feature).
pub fn destination_types() -> Vec<&'static str> {
    let mut types = vec!["stdout"];
    if cfg!(feature = "duckdb") {
        types.push("duckdb");
    }
    if cfg!(feature = "bigquery") {
        types.push("bigquery");
    }
    if cfg!(feature = "snowflake") {
        types.push("snowflake");
    }
    if cfg!(feature = "files") {
        types.push("files");
    }
    if cfg!(feature = "postgres-sink") {
        types.push("postgres");
    }
    types
}

/// A destination's settings, checked when read from the config database.
#[derive(Clone, PartialEq, Eq)]
pub enum Destination {
    /// JSON Lines on the process's standard output; config `{}`.
    Stdout,
    /// A DuckDB file; config `{"path": "...", "memory_limit": "1GB"?}`.
    #[cfg(feature = "duckdb")]
    DuckDb {
        /// The file.
        path: String,
        /// DuckDB's `memory_limit`, when given.
        memory_limit: Option<String>,
    },
    /// A BigQuery dataset; config `{"project_id", "dataset_id",
    /// "service_account_key_file"?, "endpoint"?, "storage_endpoint"?}`.
    #[cfg(feature = "bigquery")]
    BigQuery {
        /// The project.
        project_id: String,
        /// The dataset.
        dataset_id: String,
        /// The key file; none for an emulator.
        key_file: Option<String>,
        /// REST and Storage Write endpoints, when not Google's.
        endpoints: Option<(String, String)>,
    },
    /// A Snowflake schema; config `{"account", "user", "password"? |
    /// "private_key_path"? + "private_key_passphrase"?, "database",
    /// "schema", "warehouse"?, "role"?, "base_url"?,
    /// "task_schedule_minutes"?, "landing_schema"?}`.
    #[cfg(feature = "snowflake")]
    Snowflake(Box<SnowflakeDestination>),
    /// Parquet or CSV files; config `{"path", "format"? ("parquet" or
    /// "csv"), "max_rows"?, "max_mb"?, "max_age_secs"?}`, and with the
    /// `files-object-store` feature `"s3_bucket"?, "s3_prefix"?,
    /// "s3_region"?, "s3_endpoint"?, "s3_access_key_id"?,
    /// "s3_secret_access_key"?` (then `path` is where files are built
    /// before their upload).
    #[cfg(feature = "files")]
    Files(Box<crate::sinks::files::FilesSinkConfig>),
    /// Another Postgres database; config `{"url":
    /// "postgres://user:password@host:port/dbname?sslmode=..."}`.
    #[cfg(feature = "postgres-sink")]
    Postgres(Box<crate::postgres::PgConnectionConfig>),
}

/// The settings of a Snowflake destination.
#[cfg(feature = "snowflake")]
#[derive(Clone, PartialEq, Eq)]
pub struct SnowflakeDestination {
    account: String,
    user: String,
    password: Option<String>,
    private_key_path: Option<String>,
    private_key_passphrase: Option<String>,
    database: String,
    schema: String,
    warehouse: Option<String>,
    role: Option<String>,
    base_url: Option<String>,
    task_schedule_minutes: Option<u32>,
    landing_schema: Option<String>,
}

impl std::fmt::Debug for Destination {
    /// Names the type only: the settings can hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Destination({})", self.type_name())
    }
}

impl Destination {
    /// Reads a destination row. Errors ([`ErrorKind::Config`]) name the
    /// destination, the problem and the fix, never a value.
    pub fn parse(name: &str, kind: &str, config: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!("destination `{name}` ({kind}): {why}"),
            )
        };
        let value: Value = serde_json::from_str(if config.trim().is_empty() {
            "{}"
        } else {
            config
        })
        .map_err(|e| {
            bad(format!(
                "its config is not valid JSON (line {}, column {}); write a JSON object",
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(object) = value else {
            return Err(bad("its config must be a JSON object".to_owned()));
        };
        let mut fields = Fields { object, bad: &bad };
        let destination = match kind {
            "stdout" => Destination::Stdout,
            #[cfg(feature = "files")]
            "files" => Destination::Files(Box::new(files_config(&mut fields)?)),
            #[cfg(feature = "postgres-sink")]
            "postgres" => {
                let url = fields.required("url")?;
                let target = crate::postgres::PgConnectionConfig::from_url(&url)
                    .map_err(|e| bad(format!("its `url` is not usable: {}", e.message())))?;
                Destination::Postgres(Box::new(target))
            }
            #[cfg(feature = "duckdb")]
            "duckdb" => Destination::DuckDb {
                path: fields.required("path")?,
                memory_limit: fields.optional("memory_limit")?,
            },
            #[cfg(feature = "bigquery")]
            "bigquery" => {
                let project_id = fields.required("project_id")?;
                let dataset_id = fields.required("dataset_id")?;
                let key_file = fields.optional("service_account_key_file")?;
                let endpoint = fields.optional("endpoint")?;
                let storage_endpoint = fields.optional("storage_endpoint")?;
                let endpoints = match (endpoint, storage_endpoint) {
                    (Some(rest), Some(storage)) => Some((rest, storage)),
                    (None, None) => None,
                    _ => {
                        return Err(bad(
                            "give both `endpoint` and `storage_endpoint`, or neither".to_owned(),
                        ))
                    }
                };
                Destination::BigQuery {
                    project_id,
                    dataset_id,
                    key_file,
                    endpoints,
                }
            }
            #[cfg(feature = "snowflake")]
            "snowflake" => {
                let snowflake = SnowflakeDestination {
                    account: fields.required("account")?,
                    user: fields.required("user")?,
                    password: fields.optional("password")?,
                    private_key_path: fields.optional("private_key_path")?,
                    private_key_passphrase: fields.optional("private_key_passphrase")?,
                    database: fields.required("database")?,
                    schema: fields.required("schema")?,
                    warehouse: fields.optional("warehouse")?,
                    role: fields.optional("role")?,
                    base_url: fields.optional("base_url")?,
                    task_schedule_minutes: fields.optional_u32("task_schedule_minutes")?,
                    landing_schema: fields.optional("landing_schema")?,
                };
                if snowflake.password.is_none() == snowflake.private_key_path.is_none() {
                    return Err(bad(
                        "give exactly one of `password` and `private_key_path`".to_owned()
                    ));
                }
                Destination::Snowflake(Box::new(snowflake))
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "destination `{name}` has the unknown type `{other}`; this build knows {} \
                         (other sinks need their cargo feature)",
                        destination_types().join(", ")
                    ),
                ))
            }
        };
        fields.no_more()?;
        Ok(destination)
    }

    /// The destination's type, as in the `type` column.
    pub fn type_name(&self) -> &'static str {
        match self {
            #[cfg(feature = "files")]
            Destination::Files(_) => "files",
            #[cfg(feature = "postgres-sink")]
            Destination::Postgres(_) => "postgres",
            Destination::Stdout => "stdout",
            #[cfg(feature = "duckdb")]
            Destination::DuckDb { .. } => "duckdb",
            #[cfg(feature = "bigquery")]
            Destination::BigQuery { .. } => "bigquery",
            #[cfg(feature = "snowflake")]
            Destination::Snowflake(_) => "snowflake",
        }
    }

    /// Opens the sink (connecting where the sink connects) and wires the
    /// pipeline from `source` through `transforms`.
    pub(super) async fn pipeline(
        &self,
        source: PostgresSource,
        identity: String,
        transforms: Transforms,
    ) -> Result<Box<dyn ManagedRun>> {
        let action = PipelineAction::Both;
        Ok(match self {
            Destination::Stdout => Box::new(DataPipeline::new(
                source,
                TransformSink::new(StdoutSink::new(), transforms),
                action,
            )),
            #[cfg(feature = "files")]
            Destination::Files(config) => {
                let sink = crate::sinks::files::FilesSink::open(config.as_ref().clone())?;
                Box::new(DataPipeline::new(
                    source,
                    TransformSink::new(sink, transforms),
                    action,
                ))
            }
            #[cfg(feature = "postgres-sink")]
            Destination::Postgres(target) => {
                use crate::sinks::postgres::{PostgresSink, PostgresSinkConfig};
                let config =
                    PostgresSinkConfig::new(target.as_ref().clone()).with_identity(identity);
                let sink = PostgresSink::connect(config).await?;
                Box::new(DataPipeline::new(
                    source,
                    TransformSink::new(sink, transforms),
                    action,
                ))
            }
            #[cfg(feature = "duckdb")]
            Destination::DuckDb { path, memory_limit } => {
                use crate::sinks::duckdb::{DuckDbSink, DuckDbSinkConfig};
                let mut config = DuckDbSinkConfig::new(path).with_identity(identity);
                if let Some(limit) = memory_limit {
                    config = config.with_memory_limit(limit);
                }
                let sink = tokio::task::spawn_blocking(move || DuckDbSink::open(config))
                    .await
                    .map_err(|e| {
                        Error::with_source(ErrorKind::Internal, "opening the DuckDB file failed", e)
                    })??;
                Box::new(DataPipeline::new(
                    source,
                    TransformSink::new(sink, transforms),
                    action,
                ))
            }
            #[cfg(feature = "bigquery")]
            Destination::BigQuery {
                project_id,
                dataset_id,
                key_file,
                endpoints,
            } => {
                use crate::sinks::bigquery::{
                    BigQueryCredentials, BigQuerySink, BigQuerySinkConfig,
                };
                let credentials = match key_file {
                    Some(path) => BigQueryCredentials::ServiceAccountKeyFile(path.into()),
                    None => BigQueryCredentials::None,
                };
                let mut config = BigQuerySinkConfig::new(project_id, dataset_id, credentials)
                    .with_identity(identity);
                if let Some((rest, storage)) = endpoints {
                    config = config.with_endpoints(rest, storage);
                }
                Box::new(DataPipeline::new(
                    source,
                    TransformSink::new(BigQuerySink::connect(config).await?, transforms),
                    action,
                ))
            }
            #[cfg(feature = "snowflake")]
            Destination::Snowflake(settings) => Box::new(DataPipeline::new(
                source,
                TransformSink::new(settings.connect(identity).await?, transforms),
                action,
            )),
        })
    }
}

#[cfg(feature = "snowflake")]
impl SnowflakeDestination {
    async fn connect(&self, identity: String) -> Result<crate::sinks::snowflake::SnowflakeSink> {
        use crate::sinks::snowflake::{
            MergeMode, SnowflakeConfig, SnowflakeCredentials, SnowflakeSink, SnowflakeSinkConfig,
        };
        let credentials = match (&self.private_key_path, &self.password) {
            (Some(path), _) => {
                SnowflakeCredentials::key_pair_file(path, self.private_key_passphrase.clone())?
            }
            (None, Some(password)) => SnowflakeCredentials::Password(password.clone()),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "a Snowflake destination needs `password` or `private_key_path`",
                ))
            }
        };
        let mut connection = SnowflakeConfig::new(&self.account, &self.user, credentials)
            .with_database(&self.database)
            .with_schema(&self.schema);
        if let Some(warehouse) = &self.warehouse {
            connection = connection.with_warehouse(warehouse);
        }
        if let Some(role) = &self.role {
            connection = connection.with_role(role);
        }
        if let Some(url) = &self.base_url {
            connection = connection.with_base_url(url);
        }
        let mut config = SnowflakeSinkConfig::new(connection).with_identity(identity);
        if let Some(every_minutes) = self.task_schedule_minutes {
            config = config.with_merge(MergeMode::Task { every_minutes });
        }
        if let Some(schema) = &self.landing_schema {
            config = config.with_landing_schema(schema);
        }
        SnowflakeSink::connect(config).await
    }
}

/// A files destination's settings.
#[cfg(feature = "files")]
fn files_config<F: Fn(String) -> Error>(
    fields: &mut Fields<'_, F>,
) -> Result<crate::sinks::files::FilesSinkConfig> {
    use crate::sinks::files::{FileFormat, FilesSinkConfig};

    let mut config = FilesSinkConfig::new(fields.required("path")?);
    config.format = match fields.optional("format")?.as_deref() {
        None | Some("parquet") => FileFormat::Parquet,
        Some("csv") => FileFormat::Csv,
        Some(_) => {
            return Err((fields.bad)(
                "`format` must be \"parquet\" or \"csv\"".to_owned(),
            ))
        }
    };
    if let Some(rows) = fields.optional_u32("max_rows")? {
        config.roll.max_rows = u64::from(rows);
    }
    if let Some(mb) = fields.optional_u32("max_mb")? {
        config.roll.max_bytes = u64::from(mb) << 20;
    }
    if let Some(seconds) = fields.optional_u32("max_age_secs")? {
        config.roll.max_age = std::time::Duration::from_secs(u64::from(seconds));
    }
    #[cfg(feature = "files-object-store")]
    if let Some(bucket) = fields.optional("s3_bucket")? {
        let settings = crate::sinks::files::S3Settings {
            bucket,
            prefix: fields.optional("s3_prefix")?.unwrap_or_default(),
            region: fields
                .optional("s3_region")?
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint: fields.optional("s3_endpoint")?,
            access_key_id: fields.required("s3_access_key_id")?,
            secret_access_key: fields.required("s3_secret_access_key")?,
            session_token: None,
        };
        config.destination =
            crate::sinks::files::FilesDestination::ObjectStore(settings.location()?);
    }
    config.validate()?;
    Ok(config)
}

/// The keys of a config object, taken one by one so leftovers (typos) are
/// reported.
struct Fields<'a, F: Fn(String) -> Error> {
    object: Map<String, Value>,
    bad: &'a F,
}

#[cfg_attr(
    not(any(
        feature = "duckdb",
        feature = "bigquery",
        feature = "snowflake",
        feature = "files"
    )),
    allow(dead_code)
)]
impl<F: Fn(String) -> Error> Fields<'_, F> {
    fn optional(&mut self, key: &str) -> Result<Option<String>> {
        match self.object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err((self.bad)(format!("`{key}` must be a string"))),
        }
    }

    fn required(&mut self, key: &str) -> Result<String> {
        self.optional(key)?
            .filter(|text| !text.is_empty())
            .ok_or_else(|| (self.bad)(format!("its config needs `{key}`")))
    }

    fn optional_u32(&mut self, key: &str) -> Result<Option<u32>> {
        match self.object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| (self.bad)(format!("`{key}` must be a positive whole number"))),
            Some(_) => Err((self.bad)(format!("`{key}` must be a number"))),
        }
    }

    fn no_more(self) -> Result<()> {
        let mut left: Vec<&String> = self.object.keys().collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort();
        Err((self.bad)(format!(
            "its config has unknown key(s) {}",
            left.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_when_read() {
        assert_eq!(
            Destination::parse("out", "stdout", "").unwrap(),
            Destination::Stdout
        );
        let unknown = Destination::parse("d", "oracle", "{}").unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::Config);
        assert!(unknown.message().contains("`oracle`"), "{unknown}");
        assert!(unknown.message().contains("stdout"), "{unknown}");

        let invalid = Destination::parse("d", "stdout", "{\"path\": ").unwrap_err();
        assert!(invalid.message().contains("not valid JSON"), "{invalid}");
        let not_object = Destination::parse("d", "stdout", "[1]").unwrap_err();
        assert!(not_object.message().contains("JSON object"), "{not_object}");
        let typo = Destination::parse("d", "stdout", "{\"pth\": \"x\"}").unwrap_err();
        assert!(typo.message().contains("`pth`"), "{typo}");
    }

    #[cfg(feature = "postgres-sink")]
    #[test]
    fn postgres_destinations_read_their_url() {
        let ok = Destination::parse(
            "replica",
            "postgres",
            r#"{"url": "postgres://replica:secret@db.internal:6543/analytics?sslmode=require"}"#,
        )
        .unwrap();
        let Destination::Postgres(target) = &ok else {
            panic!("not a Postgres destination: {ok:?}");
        };
        assert_eq!(
            (target.host.as_str(), target.port, target.dbname.as_str()),
            ("db.internal", 6543, "analytics")
        );
        assert_eq!(target.password.as_deref(), Some("secret"));
        assert_eq!(format!("{ok:?}"), "Destination(postgres)");
        let missing = Destination::parse("replica", "postgres", "{}").unwrap_err();
        assert!(missing.message().contains("`url`"), "{missing}");
        let bad = Destination::parse("replica", "postgres", r#"{"url": "mysql://x"}"#).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::Config);
        assert!(bad.message().contains("`replica`"), "{bad}");
        assert!(!bad.message().contains("secret"), "{bad}");
    }

    #[cfg(feature = "files-object-store")]
    #[test]
    fn files_destinations_read_format_limits_and_s3() {
        let ok = Destination::parse(
            "f",
            "files",
            r#"{"path": "/spool", "format": "csv", "max_rows": 500, "max_age_secs": 5,
                "s3_bucket": "lake", "s3_access_key_id": "id", "s3_secret_access_key": "s3cr3t"}"#,
        )
        .unwrap();
        let Destination::Files(config) = &ok else {
            panic!("{ok:?}")
        };
        assert_eq!(config.format, crate::sinks::files::FileFormat::Csv);
        assert_eq!(config.roll.max_rows, 500);
        assert_eq!(config.roll.max_age, std::time::Duration::from_secs(5));
        assert!(matches!(
            config.destination,
            crate::sinks::files::FilesDestination::ObjectStore(_)
        ));
        let bad =
            Destination::parse("f", "files", r#"{"path": "/x", "format": "orc"}"#).unwrap_err();
        assert!(bad.message().contains("parquet"), "{bad}");
        let secretless = Destination::parse(
            "f",
            "files",
            r#"{"path": "/x", "s3_bucket": "lake", "s3_access_key_id": "id"}"#,
        )
        .unwrap_err();
        assert!(
            secretless.message().contains("s3_secret_access_key"),
            "{secretless}"
        );
    }

    #[cfg(feature = "duckdb")]
    #[test]
    fn duckdb_destinations_need_a_path() {
        let ok = Destination::parse("d", "duckdb", r#"{"path": "/x.duckdb"}"#).unwrap();
        assert_eq!(ok.type_name(), "duckdb");
        let missing = Destination::parse("d", "duckdb", "{}").unwrap_err();
        assert!(missing.message().contains("`path`"), "{missing}");
        let wrong = Destination::parse("d", "duckdb", r#"{"path": 3}"#).unwrap_err();
        assert!(wrong.message().contains("must be a string"), "{wrong}");
    }

    #[cfg(feature = "snowflake")]
    #[test]
    fn snowflake_errors_never_show_values() {
        let config = r#"{"account": "a", "user": "u", "password": "hunter2-secret",
            "private_key_path": "/k.p8", "database": "d", "schema": "s"}"#;
        let both = Destination::parse("sf", "snowflake", config).unwrap_err();
        assert!(both.message().contains("exactly one"), "{both}");
        assert!(!both.to_string().contains("hunter2"), "{both}");
        let ok = Destination::parse(
            "sf",
            "snowflake",
            r#"{"account": "a", "user": "u", "password": "hunter2-secret", "database": "d",
                "schema": "s", "task_schedule_minutes": 5}"#,
        )
        .unwrap();
        assert!(!format!("{ok:?}").contains("hunter2"));
        let minutes = Destination::parse(
            "sf",
            "snowflake",
            r#"{"account": "a", "user": "u", "password": "p", "database": "d", "schema": "s",
                "task_schedule_minutes": 0}"#,
        )
        .unwrap_err();
        assert!(minutes.message().contains("positive"), "{minutes}");
    }
}
