//! The copy connections of a backfill: several connections that import the
//! same exported snapshot and read the planned [`CopyUnit`]s in parallel.
//!
//! Units are taken in plan order (all units of a table before those of the
//! next table), and every table has its own bounded channel to the reader.
//! A connection that runs ahead to the next table blocks once that table's
//! channel is full, so memory stays bounded by the channel sizes while the
//! reader (the pipeline, feeding the sink) works through the tables in order.
//! Reading ahead cannot deadlock: when a connection blocks on a later table,
//! every unit of the table being read has already been taken by a connection
//! that is still sending to the reader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{debug, info};

use super::copy::UnitReader;
use super::copy_plan::{split_blocks, CopyUnit};
use crate::pipeline::BatchConfig;
use crate::postgres::catalog;
use crate::postgres::replication::CopyClient;
use crate::postgres::PgConnectionConfig;
use crate::sources::TableCopyStream;
use crate::types::table::quote_literal;
use crate::types::{TableId, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

/// What a copy connection sends about one table.
enum CopyMessage {
    /// Rows of the table.
    Rows(RecordBatch),
    /// One of the table's units was read completely.
    UnitDone,
}

type Sender = mpsc::Sender<Result<CopyMessage>>;
type Queue = Arc<Mutex<VecDeque<(CopyUnit, Sender)>>>;

/// The tables being copied and the connections copying them.
pub(crate) struct CopyPool {
    tables: HashMap<TableId, PostgresTableCopy>,
    workers: Vec<JoinHandle<()>>,
}

impl CopyPool {
    /// Plans the copy of `tables` (with `planner`, a connection inside the
    /// snapshot) and starts `connections` connections that import
    /// `snapshot` and read the units.
    pub(crate) async fn start(
        config: &PgConnectionConfig,
        planner: &Client,
        snapshot: &str,
        tables: &[Arc<TableSchema>],
        row_filters: &HashMap<TableName, String>,
        connections: usize,
        batch: &BatchConfig,
    ) -> Result<Self> {
        let connections = connections.max(1);
        // TID range scans need Postgres 14; older servers read whole tables.
        let split = catalog::server_version_num(planner).await? >= 140_000;
        let queue: Queue = Arc::default();
        let mut readers = HashMap::with_capacity(tables.len());
        let mut total_units = 0;
        for table in tables {
            let (sender, receiver) = mpsc::channel(connections + 1);
            let mut units = 0;
            for (relation, blocks) in
                catalog::leaf_relations(planner, table.id, &table.name).await?
            {
                let ranges = split_blocks(blocks, if split { connections } else { 1 });
                debug!(table = %table.name, %relation, blocks, ranges = ranges.len(), "planned copy units");
                for range in ranges {
                    let unit = CopyUnit {
                        table: table.clone(),
                        relation: relation.clone(),
                        range,
                        row_filter: row_filters.get(&table.name).cloned(),
                    };
                    lock(&queue).push_back((unit, sender.clone()));
                    units += 1;
                }
            }
            total_units += units;
            readers.insert(
                table.id,
                PostgresTableCopy {
                    table: table.clone(),
                    receiver,
                    units_left: units,
                },
            );
        }
        let connections = connections.min(total_units.max(1));
        info!(
            tables = tables.len(),
            units = total_units,
            connections,
            "starting the backfill"
        );
        let clients = futures_util::future::try_join_all(
            (0..connections).map(|_| import_snapshot(config, snapshot)),
        )
        .await?;
        let workers = clients
            .into_iter()
            .map(|client| tokio::spawn(work(client, queue.clone(), batch.clone())))
            .collect();
        Ok(Self {
            tables: readers,
            workers,
        })
    }

    /// The rows of `table`, which must be one of the planned tables (each
    /// can be taken once).
    pub(crate) fn take(&mut self, table: &TableSchema) -> Result<PostgresTableCopy> {
        self.tables.remove(&table.id).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{} is not among the tables planned for this backfill (or was already copied); \
                     copy the tables in the order of the source's plan",
                    table.name
                ),
            )
        })
    }
}

impl Drop for CopyPool {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<(CopyUnit, Sender)>> {
    // A worker that panicked while holding the lock left the queue intact.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A copy connection inside the exported snapshot.
async fn import_snapshot(config: &PgConnectionConfig, snapshot: &str) -> Result<CopyClient> {
    let mut client = CopyClient::connect(config).await?;
    client
        .execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::SourceSetup,
                "a copy connection could not import the backfill's snapshot (it is only valid while the \
                 connection that exported it is idle); restart the pipeline",
                e,
            )
        })?;
    Ok(client)
}

/// One copy connection: reads units until none are left.
async fn work(mut client: CopyClient, queue: Queue, batch: BatchConfig) {
    loop {
        let Some((unit, sender)) = lock(&queue).pop_front() else {
            client.close().await;
            return;
        };
        match copy_unit(&mut client, &unit, &batch, &sender).await {
            Ok(true) => {
                if sender.send(Ok(CopyMessage::UnitDone)).await.is_err() {
                    return;
                }
            }
            // The reader is gone: the backfill was abandoned.
            Ok(false) => return,
            Err(error) => {
                // The backfill fails: release every waiting table, whose
                // reader then reports the copy as incomplete.
                lock(&queue).clear();
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Reads one unit into its table's channel; `false` when the reader is gone.
async fn copy_unit(
    client: &mut CopyClient,
    unit: &CopyUnit,
    batch: &BatchConfig,
    sender: &Sender,
) -> Result<bool> {
    let mut reader = UnitReader::start(client, unit, batch).await?;
    while let Some(rows) = reader.next_batch().await? {
        if sender.send(Ok(CopyMessage::Rows(rows))).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rows of one table being copied, in Arrow batches of its schema, in
/// no particular order.
pub struct PostgresTableCopy {
    table: Arc<TableSchema>,
    receiver: mpsc::Receiver<Result<CopyMessage>>,
    units_left: usize,
}

#[async_trait]
impl TableCopyStream for PostgresTableCopy {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while self.units_left > 0 {
            match self.receiver.recv().await {
                Some(Ok(CopyMessage::Rows(rows))) => return Ok(Some(rows)),
                Some(Ok(CopyMessage::UnitDone)) => self.units_left -= 1,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        format!(
                            "the copy of {} stopped before it was complete (a copy connection failed); \
                             nothing of it is marked copied, restart the pipeline",
                            self.table.name
                        ),
                    ))
                }
            }
        }
        Ok(None)
    }
}
