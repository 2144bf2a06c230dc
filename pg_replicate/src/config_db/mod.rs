//! Pipelines configured in Postgres tables: [`ConfigDbReplicator`] polls a
//! config database's `sources`, `destinations` and `pipelines` tables
//! (created by [`migrate`]) and runs every pipeline whose status is
//! `START` in a [`PipelineManager`], writing each pipeline's state back to
//! its row.
//!
//! A row is read again at every poll; a pipeline whose row (or its source
//! or destination) changed is stopped and built again from the new row.
//! A bad row fails only its own pipeline, with the reason in its `error`
//! column. Passwords and destination configs are never logged.

mod destination;
mod tables;
mod transforms;

pub use destination::{destination_types, Destination};
pub use tables::{migrate, pipelines, write_state, PipelineRow};
pub use transforms::parse_transforms;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::pipeline::manager::{ManagedRun, RestartPolicy};
use crate::pipeline::{ManagedPipeline, PipelineManager, PipelineReport, PipelineStatus};
use crate::postgres::client::connect_query_client;
use crate::postgres::PgConnectionConfig;
use crate::sources::postgres::PostgresSource;
use crate::transform::Transforms;
use crate::{Error, ErrorKind, Result};

/// Runs the pipelines a config database describes.
pub struct ConfigDbReplicator {
    config_db: PgConnectionConfig,
    schema: String,
    poll_interval: Duration,
    restart: RestartPolicy,
    manager: PipelineManager,
    /// Per managed pipeline: the fingerprint of the row it was built from
    /// and the status last acted on.
    known: HashMap<String, Known>,
    /// Rows that could not become a pipeline, with the reason.
    invalid: HashMap<String, (u64, String)>,
}

struct Known {
    fingerprint: u64,
    status: String,
}

impl ConfigDbReplicator {
    /// Reads the tables in schema `public` of `config_db` every 10 s and
    /// runs at most 16 pipelines at a time.
    pub fn new(config_db: PgConnectionConfig) -> Self {
        Self {
            config_db,
            schema: "public".to_owned(),
            poll_interval: Duration::from_secs(10),
            restart: RestartPolicy::never(),
            manager: PipelineManager::new(16),
            known: HashMap::new(),
            invalid: HashMap::new(),
        }
    }

    /// Sets the schema of the config tables.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets how often the tables are read.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// Sets how many pipelines run at a time.
    pub fn with_max_running(mut self, max_running: usize) -> Self {
        self.manager = PipelineManager::new(max_running);
        self
    }

    /// Sets whether a pipeline that failed on a retryable error starts
    /// again by itself ([`RestartPolicy`]; default never: a failed pipeline
    /// waits until its row changes, for example its status set to `PAUSE`
    /// and back to `START`).
    pub fn with_restart_policy(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// The manager running the pipelines (for their statuses).
    pub fn manager(&self) -> &PipelineManager {
        &self.manager
    }

    /// Creates the config tables when missing, then polls until `cancel`
    /// fires, and stops every pipeline gracefully. A config database that
    /// cannot be read for a while leaves the running pipelines running.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<()> {
        let client = connect_query_client(&self.config_db).await?;
        migrate(&client, &self.schema).await?;
        info!(schema = %self.schema, "config tables ready; polling");
        let mut client = Some(client);
        loop {
            if client.is_none() {
                match connect_query_client(&self.config_db).await {
                    Ok(connected) => client = Some(connected),
                    Err(error) => warn!(%error, "could not reconnect to the config database"),
                }
            }
            if let Some(connected) = &client {
                if let Err(error) = self.poll(connected).await {
                    warn!(%error, "reading the config database failed; trying again at the next poll");
                    if connected.is_closed() {
                        client = None;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        info!("stopping every pipeline");
        self.manager.shutdown().await;
        if let Some(client) = &client {
            if let Err(error) = self.write_states(client).await {
                warn!(%error, "could not write the final states");
            }
        }
        Ok(())
    }

    /// Reads the rows once and brings the running pipelines in line.
    pub async fn poll(&mut self, client: &tokio_postgres::Client) -> Result<()> {
        let rows = pipelines(client, &self.schema).await?;
        let mut seen = HashSet::with_capacity(rows.len());
        for row in rows {
            seen.insert(row.name.clone());
            self.reconcile(row).await;
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            info!(pipeline = %name, "pipeline row removed; stopping it");
            if let Err(error) = self.manager.remove(&name).await {
                warn!(pipeline = %name, %error, "could not remove the pipeline");
            }
            self.known.remove(&name);
        }
        self.invalid.retain(|name, _| seen.contains(name));
        self.write_states(client).await
    }

    async fn reconcile(&mut self, row: PipelineRow) {
        let fingerprint = fingerprint(&row);
        let name = row.name.clone();
        if let Some(known) = self.known.get(&name) {
            if known.fingerprint != fingerprint {
                info!(pipeline = %name, "pipeline row changed; building it again");
                if let Err(error) = self.manager.remove(&name).await {
                    warn!(pipeline = %name, %error, "could not remove the pipeline");
                }
                self.known.remove(&name);
            }
        }
        if !self.known.contains_key(&name) {
            if matches!(self.invalid.get(&name), Some((f, _)) if *f == fingerprint) {
                return;
            }
            match self.build(&row) {
                Ok(pipeline) => {
                    if let Err(error) = self.manager.add(pipeline) {
                        self.invalid
                            .insert(name.clone(), (fingerprint, error.to_string()));
                        return;
                    }
                    self.invalid.remove(&name);
                    self.known.insert(
                        name.clone(),
                        Known {
                            fingerprint,
                            status: String::new(),
                        },
                    );
                }
                Err(error) => {
                    warn!(pipeline = %name, %error, "pipeline row is not usable");
                    self.invalid.insert(name, (fingerprint, error.to_string()));
                    return;
                }
            }
        }
        let Some(known) = self.known.get_mut(&name) else {
            return;
        };
        if known.status == row.status {
            return;
        }
        known.status = row.status.clone();
        let result = match row.status.as_str() {
            "START" => self.manager.start(&name).await,
            _ => self.manager.pause(&name).await,
        };
        if let Err(error) = result {
            warn!(pipeline = %name, %error, "could not change the pipeline's state");
        }
    }

    /// Checks a row and makes its pipeline (the sink opens when it runs).
    fn build(&self, row: &PipelineRow) -> Result<ManagedPipeline> {
        let destination = Destination::parse(
            &row.destination,
            &row.destination_type,
            &row.destination_config,
        )?;
        if row.publication.is_empty() || row.slot.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "pipeline `{}` needs a publication (in its source) and a slot",
                    row.name
                ),
            ));
        }
        let transforms = parse_transforms(&row.name, &row.transforms)?;
        let run = ConfiguredRun {
            name: row.name.clone(),
            source: row.source.clone(),
            publication: row.publication.clone(),
            slot: row.slot.clone(),
            destination,
            transforms,
            pipeline: None,
        };
        Ok(ManagedPipeline::new(&row.name, run).with_restart_policy(self.restart))
    }

    /// Writes every pipeline's state to its row.
    async fn write_states(&self, client: &tokio_postgres::Client) -> Result<()> {
        for (name, status) in self.manager.statuses() {
            let error = match &status {
                PipelineStatus::Failed(error) | PipelineStatus::Restarting { error, .. } => {
                    Some(error.to_string())
                }
                _ => None,
            };
            write_state(client, &self.schema, &name, status.name(), error.as_deref()).await?;
        }
        for (name, (_, error)) in &self.invalid {
            write_state(client, &self.schema, name, "failed", Some(error)).await?;
        }
        Ok(())
    }
}

/// A hash of everything a pipeline is built from, to notice changes.
fn fingerprint(row: &PipelineRow) -> u64 {
    let mut hasher = DefaultHasher::new();
    let source = &row.source;
    (
        &source.host,
        source.port,
        &source.dbname,
        &source.username,
        &source.password,
        format!("{:?}", source.ssl_mode),
    )
        .hash(&mut hasher);
    (
        &row.publication,
        &row.slot,
        &row.destination,
        &row.destination_type,
        &row.destination_config,
        &row.transforms,
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// A pipeline built from its row: the sink is opened (and the source
/// reached) when it first runs, so a destination that cannot be reached
/// fails that run with the reason.
struct ConfiguredRun {
    name: String,
    source: PgConnectionConfig,
    publication: String,
    slot: String,
    destination: Destination,
    transforms: Transforms,
    pipeline: Option<Box<dyn ManagedRun>>,
}

#[async_trait]
impl ManagedRun for ConfiguredRun {
    async fn run(&mut self, cancel: CancellationToken) -> Result<PipelineReport> {
        if self.pipeline.is_none() {
            let source = PostgresSource::new(self.source.clone(), &self.publication, &self.slot);
            let identity = format!("{}/{}", self.publication, self.slot);
            let mut pipeline = self
                .destination
                .pipeline(source, identity, self.transforms.clone())
                .await?;
            pipeline.set_name(&self.name);
            self.pipeline = Some(pipeline);
        }
        match self.pipeline.as_mut() {
            Some(pipeline) => pipeline.run(cancel).await,
            None => Err(Error::new(
                ErrorKind::Internal,
                "the pipeline was not built",
            )),
        }
    }
}
