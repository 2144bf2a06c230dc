//! A small stateful sink for the tests: it prints through the real stdout
//! sink's JSON encoder into a buffer, keeps every line, applies the lines to
//! an in-memory copy of each table, and keeps resumption state the way a
//! transactional sink does (together with the data it covers). The store
//! outlives pipeline runs, so restarts can be tested.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use pg_replicate::sinks::stdout::StdoutSink;
use pg_replicate::sinks::Sink;
use pg_replicate::types::change::{CdcBatch, ResumptionState};
use pg_replicate::types::{Lsn, ReplicaIdentity, TableSchema};
use pg_replicate::{Error, ErrorKind, Result};
use serde_json::{Map, Value};

/// What the sink has stored, shared across pipeline runs.
#[derive(Default)]
pub struct Store {
    /// Every line printed, per run (a new run starts a new list).
    pub runs: Vec<Vec<Value>>,
    /// Table contents: table name → row key → row.
    pub tables: BTreeMap<String, BTreeMap<String, Value>>,
    /// Resumption state.
    pub state: ResumptionState,
    /// Identity columns per table (empty = the whole row is the key).
    identity: HashMap<String, Vec<String>>,
    /// Batches received that ended inside a transaction.
    pub continued_batches: u64,
}

impl Store {
    /// All lines of all runs.
    pub fn all_lines(&self) -> impl Iterator<Item = &Value> {
        self.runs.iter().flatten()
    }

    /// Rows of `table` sorted by key, as JSON values.
    pub fn rows(&self, table: &str) -> Vec<Value> {
        self.tables
            .get(table)
            .map(|rows| rows.values().cloned().collect())
            .unwrap_or_default()
    }

    fn key(&self, table: &str, row: &Map<String, Value>) -> String {
        let identity = self.identity.get(table).filter(|c| !c.is_empty());
        match identity {
            Some(columns) => {
                let key: Vec<&Value> = columns
                    .iter()
                    .map(|c| row.get(c).unwrap_or(&Value::Null))
                    .collect();
                serde_json::to_string(&key).unwrap()
            }
            None => serde_json::to_string(row).unwrap(),
        }
    }

    fn apply(&mut self, line: Value) {
        let op = line["op"].as_str().unwrap_or_default().to_owned();
        let table = line["table"].as_str().unwrap_or_default().to_owned();
        match op.as_str() {
            "copy" | "insert" => {
                let row = line["row"].as_object().cloned().unwrap();
                let key = self.key(&table, &row);
                self.tables
                    .entry(table.clone())
                    .or_default()
                    .insert(key, Value::Object(row));
            }
            "update" => {
                let mut row = line["row"].as_object().cloned().unwrap();
                let old_key = match line.get("old").and_then(Value::as_object) {
                    Some(old) => self.key(&table, old),
                    None => self.key(&table, &row),
                };
                let rows = self.tables.entry(table.clone()).or_default();
                let previous = rows.remove(&old_key);
                for column in line
                    .get("unchanged")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = column.as_str().unwrap();
                    let value = previous
                        .as_ref()
                        .map(|p| p[name].clone())
                        .expect("unchanged column of a row never seen");
                    row.insert(name.to_owned(), value);
                }
                let key = self.key(&table, &row);
                self.tables
                    .entry(table.clone())
                    .or_default()
                    .insert(key, Value::Object(row));
            }
            "delete" => {
                let old = line["old"].as_object().cloned().unwrap();
                let key = self.key(&table, &old);
                self.tables.entry(table.clone()).or_default().remove(&key);
            }
            "truncate" => {
                self.tables.entry(table.clone()).or_default().clear();
            }
            _ => {}
        }
        if let Some(run) = self.runs.last_mut() {
            run.push(line);
        }
    }
}

/// The sink; clones share the store.
pub struct MemorySink {
    store: Arc<Mutex<Store>>,
    encoder: StdoutSink<Vec<u8>>,
    /// Fail `end_table_copy` of this table (simulates a crash mid-backfill).
    pub fail_copy_of: Option<String>,
}

impl MemorySink {
    /// A sink writing into `store`; starts a new run in it.
    pub fn new(store: Arc<Mutex<Store>>) -> Self {
        store.lock().unwrap().runs.push(Vec::new());
        Self {
            store,
            encoder: StdoutSink::with_writer(Vec::new()),
            fail_copy_of: None,
        }
    }

    fn drain(&mut self) {
        let buffer = std::mem::take(self.encoder.writer_mut());
        let mut store = self.store.lock().unwrap();
        for line in buffer.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("invalid JSON line {}: {e}", String::from_utf8_lossy(line))
            });
            store.apply(value);
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        Ok(self.store.lock().unwrap().state.clone())
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        let mut store = self.store.lock().unwrap();
        for table in tables {
            let identity = if table.replica_identity == ReplicaIdentity::Full
                && !table.columns.iter().any(|c| c.identity)
            {
                Vec::new()
            } else {
                table
                    .columns
                    .iter()
                    .filter(|c| c.identity)
                    .map(|c| c.name.clone())
                    .collect()
            };
            store.identity.insert(table.name.to_string(), identity);
        }
        Ok(())
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        // Discard what an interrupted copy left.
        self.store
            .lock()
            .unwrap()
            .tables
            .remove(&table.name.to_string());
        Ok(())
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        self.encoder.write_table_rows(table, rows).await?;
        self.drain();
        Ok(())
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        if self.fail_copy_of.as_deref() == Some(table.name.to_string().as_str()) {
            // Permanent, so the pipeline stops here as a crash would.
            return Err(Error::new(
                ErrorKind::Config,
                "simulated crash at the end of a copy",
            ));
        }
        self.store
            .lock()
            .unwrap()
            .state
            .copied_tables
            .insert(table.id, snapshot_lsn);
        Ok(())
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        let end = batch.end_lsn;
        let continues = batch.continues;
        self.store.lock().unwrap().continued_batches += u64::from(continues);
        self.encoder.write_cdc_batch(batch).await?;
        if continues {
            // Like a transactional sink: nothing of an unfinished
            // transaction is stored before its last batch.
            return Ok(self
                .store
                .lock()
                .unwrap()
                .state
                .last_lsn
                .unwrap_or(Lsn::ZERO));
        }
        self.drain();
        self.store.lock().unwrap().state.last_lsn = Some(end);
        Ok(end)
    }
}
