//! The change stream: pgoutput messages from the replication connection,
//! decoded into per-table change batches, cut into batches of whole
//! transactions, with standby status updates that confirm only what the sink
//! has durably stored.
//!
//! Memory stays bounded whatever the transaction size: a transaction larger
//! than the batch limits is handed out in several batches
//! ([`CdcBatch::continues`]), and with protocol 2 (Postgres 14+) the server
//! streams large transactions before they commit; their messages wait in a
//! [`Spool`] per transaction (spilled to disk beyond
//! [`BatchConfig::max_spool_memory`]) and are replayed on `Stream Commit`,
//! without the subtransactions that aborted; `Stream Abort` drops them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::change_batch::{ChangeBatchBuilder, ChangeStamp};
use super::relations::RelationCache;
use super::spool::{Replay, Spool, SpoolLimits};
use crate::pipeline::BatchConfig;
use crate::postgres::pgoutput::{self, OldTuple, PgOutputMessage};
use crate::postgres::replication::{ReplicationMessage, ReplicationStream};
use crate::sources::CdcStream;
use crate::types::change::{CdcBatch, CdcEvent, ChangeOp, TableChanges};
use crate::types::{ArrayForm, Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const POSTGRES_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// How long a shutdown waits for the rest of a transaction already being
/// received.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The transaction being received.
struct OpenTransaction {
    commit_lsn: Lsn,
    commit_time: i64,
    next_sequence: u32,
    /// Already applied by the sink in an earlier run.
    skip: bool,
    /// Produced at least one event.
    has_events: bool,
}

/// Committed changes from a logical replication slot.
pub struct PostgresCdcStream {
    stream: ReplicationStream,
    relations: RelationCache,
    copied_at: BTreeMap<TableId, Lsn>,
    /// End LSN of the last transaction the sink already has.
    resume_after: Lsn,
    batch: BatchConfig,
    cancel: CancellationToken,

    open: Option<OpenTransaction>,
    /// Events of complete transactions (and of the open one), in order.
    events: Vec<CdcEvent>,
    /// Per-table builders with rows not yet moved into `events`, in order of
    /// first appearance.
    builders: Vec<ChangeBatchBuilder>,
    builder_index: HashMap<TableId, usize>,
    pending_rows: usize,
    pending_bytes: usize,
    pending_transactions: u64,
    pending_end: Lsn,
    pending_since: Option<Instant>,

    /// Highest WAL position received.
    received: Lsn,
    /// What the slot has been told is flushed.
    confirmed: Lsn,
    /// End LSN of the last batch handed to the sink.
    handed_out: Lsn,
    /// End LSN of transactions that carried nothing for the sink.
    empty_end: Lsn,
    last_status: Instant,
    /// When the server last sent anything (data or keepalive).
    last_heard: Instant,

    /// Dropped with the stream, which ends it.
    _heartbeat: Vec<super::heartbeat::Heartbeat>,

    /// Streamed transactions not yet committed, by top-level xid.
    spools: HashMap<u32, Spool>,
    spool_limits: SpoolLimits,
    /// Bytes all spools hold in memory.
    spooled_in_memory: usize,
    /// The top-level xid of the streamed block being received.
    streaming: Option<u32>,
    /// A committed streamed transaction being replayed, with its end LSN.
    replay: Option<(Replay, Lsn)>,

    /// What the pipeline reports as durably stored, from another task.
    durable: tokio::sync::watch::Receiver<Lsn>,
    durable_sender: tokio::sync::watch::Sender<Lsn>,
}

impl PostgresCdcStream {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        stream: ReplicationStream,
        query: Client,
        tables: Vec<Arc<TableSchema>>,
        copied_at: BTreeMap<TableId, Lsn>,
        resume_after: Lsn,
        start: Lsn,
        batch: BatchConfig,
        cancel: CancellationToken,
        array_form: ArrayForm,
    ) -> Self {
        let (durable_sender, durable_receiver) = tokio::sync::watch::channel(start);
        Self {
            stream,
            relations: RelationCache::new(query, tables, array_form),
            copied_at,
            resume_after,
            cancel,
            open: None,
            events: Vec::new(),
            builders: Vec::new(),
            builder_index: HashMap::new(),
            pending_rows: 0,
            pending_bytes: 0,
            pending_transactions: 0,
            pending_end: Lsn::ZERO,
            pending_since: None,
            received: start,
            confirmed: start,
            handed_out: start,
            empty_end: start,
            last_status: Instant::now(),
            last_heard: Instant::now(),
            _heartbeat: Vec::new(),
            spools: HashMap::new(),
            spool_limits: SpoolLimits {
                dir: batch.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
                max_memory: batch.max_spool_memory,
            },
            spooled_in_memory: 0,
            streaming: None,
            replay: None,
            durable: durable_receiver,
            durable_sender,
            batch,
        }
    }

    pub(crate) fn with_heartbeat(mut self, heartbeat: Vec<super::heartbeat::Heartbeat>) -> Self {
        self._heartbeat = heartbeat;
        self
    }

    fn batch_full(&self) -> bool {
        self.pending_rows >= self.batch.max_rows || self.pending_bytes >= self.batch.max_bytes
    }

    fn fill_deadline(&self) -> Option<Instant> {
        self.pending_since.map(|since| since + self.batch.max_fill)
    }

    /// Moves the per-table builders into `events`, keeping order.
    fn seal_builders(&mut self) -> Result<()> {
        for builder in &mut self.builders {
            if builder.len() > 0 {
                let table = builder.table().clone();
                let batch = builder.finish()?;
                self.events
                    .push(CdcEvent::Changes(TableChanges { table, batch }));
            }
        }
        self.builders.clear();
        self.builder_index.clear();
        Ok(())
    }

    fn take_batch(&mut self) -> Result<Option<CdcBatch>> {
        if self.pending_transactions == 0 {
            return Ok(None);
        }
        self.seal_builders()?;
        let batch = CdcBatch {
            events: std::mem::take(&mut self.events),
            end_lsn: self.pending_end,
            transactions: self.pending_transactions,
            continues: false,
        };
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.pending_transactions = 0;
        self.pending_since = None;
        self.handed_out = batch.end_lsn;
        Ok(Some(batch))
    }

    /// Whether the transaction being received has outgrown the batch
    /// limits, so that what it has so far is handed out now.
    fn open_transaction_full(&self) -> bool {
        self.open.as_ref().is_some_and(|t| t.has_events && !t.skip) && self.batch_full()
    }

    /// Hands out what is buffered of the transaction being received (and of
    /// the complete transactions before it) as a continuing batch.
    fn take_partial(&mut self) -> Result<CdcBatch> {
        self.seal_builders()?;
        let batch = CdcBatch {
            events: std::mem::take(&mut self.events),
            end_lsn: self.handed_out,
            transactions: self.pending_transactions,
            continues: true,
        };
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.pending_transactions = 0;
        self.pending_since = None;
        Ok(batch)
    }

    /// With everything handed out confirmed and nothing buffered, WAL that
    /// carried nothing for the sink (unpublished tables, keepalives) is
    /// handed out as an empty batch, so the sink records the position and
    /// the slot can move on without ever passing what the sink stored.
    fn take_idle_progress(&mut self) -> Option<CdcBatch> {
        let idle = self.open.is_none()
            && self.pending_transactions == 0
            && self.confirmed >= self.handed_out
            && self.empty_end > self.handed_out;
        idle.then(|| {
            self.handed_out = self.empty_end;
            CdcBatch {
                events: Vec::new(),
                end_lsn: self.empty_end,
                transactions: 0,
                continues: false,
            }
        })
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<()> {
        self.stream
            .send_status_update(
                self.received,
                self.confirmed,
                self.confirmed,
                reply_requested,
            )
            .await?;
        self.last_status = Instant::now();
        Ok(())
    }

    /// Handles one message from the server: streamed data is spooled,
    /// everything else decoded and handled.
    async fn receive(&mut self, data: &Bytes) -> Result<()> {
        if let Some(xid) = self.streaming {
            let control = matches!(data.first(), Some(b'S' | b'E' | b'c' | b'A'));
            if !control {
                let spool = self.spools.entry(xid).or_insert_with(Spool::new);
                let change =
                    spool.push(data.clone(), self.spooled_in_memory, &self.spool_limits)?;
                self.spooled_in_memory = self.spooled_in_memory.saturating_add_signed(change);
                return Ok(());
            }
        }
        let message = pgoutput::decode(data).map_err(malformed)?;
        self.handle(message, data.len()).await
    }

    /// Handles the next message of the streamed transaction being replayed.
    async fn replay_step(&mut self) -> Result<()> {
        let Some((mut replay, end_lsn)) = self.replay.take() else {
            return Ok(());
        };
        let Some(data) = replay.next_message()? else {
            return self.commit(end_lsn);
        };
        let (_, message) = pgoutput::decode_streamed(data).map_err(malformed)?;
        let size = data.len();
        self.handle(message, size).await?;
        self.replay = Some((replay, end_lsn));
        Ok(())
    }

    /// Ends the transaction being received.
    fn commit(&mut self, end_lsn: Lsn) -> Result<()> {
        let open = self
            .open
            .take()
            .ok_or_else(|| protocol("Commit without Begin"))?;
        if open.has_events {
            self.pending_transactions += 1;
            self.pending_end = end_lsn;
            self.pending_since.get_or_insert_with(Instant::now);
        } else {
            self.empty_end = self.empty_end.max(end_lsn);
        }
        Ok(())
    }

    /// `Stream Start`: the data messages until `Stream Stop` belong to `xid`.
    fn stream_start(&mut self, xid: u32) -> Result<()> {
        if self.streaming.is_some() || self.open.is_some() {
            return Err(protocol("Stream Start inside a transaction"));
        }
        self.streaming = Some(xid);
        Ok(())
    }

    /// `Stream Abort`: drops a streamed transaction, or one of its
    /// subtransactions.
    fn stream_abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            self.drop_spool(xid);
            debug!(
                xid,
                "streamed transaction aborted; its changes are discarded"
            );
        } else if let Some(spool) = self.spools.get_mut(&xid) {
            spool.abort_subtransaction(subxid);
        }
    }

    /// `Stream Commit`: replays the transaction's spool as a transaction
    /// committed at `commit_lsn`.
    fn stream_commit(
        &mut self,
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> Result<()> {
        if self.streaming.is_some() || self.open.is_some() {
            return Err(protocol("Stream Commit inside a transaction"));
        }
        let skip = commit_lsn < self.resume_after;
        self.open = Some(OpenTransaction {
            commit_lsn,
            commit_time: commit_time.saturating_add(POSTGRES_EPOCH_OFFSET_MICROS),
            next_sequence: 0,
            skip,
            has_events: false,
        });
        match self.drop_spool(xid) {
            Some(spool) if !skip => {
                self.replay = Some((spool.into_replay()?, end_lsn));
                Ok(())
            }
            _ => self.commit(end_lsn),
        }
    }

    /// Takes a transaction's spool out, releasing its share of the memory.
    fn drop_spool(&mut self, xid: u32) -> Option<Spool> {
        let spool = self.spools.remove(&xid)?;
        self.spooled_in_memory = self.spooled_in_memory.saturating_sub(spool.memory_bytes());
        Some(spool)
    }

    /// Handles one decoded pgoutput message of `size` bytes.
    async fn handle(&mut self, message: PgOutputMessage<'_>, size: usize) -> Result<()> {
        match message {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time,
                ..
            } => {
                if self.open.is_some() {
                    return Err(protocol("Begin inside an open transaction"));
                }
                self.open = Some(OpenTransaction {
                    commit_lsn: final_lsn,
                    commit_time: commit_time.saturating_add(POSTGRES_EPOCH_OFFSET_MICROS),
                    next_sequence: 0,
                    skip: final_lsn < self.resume_after,
                    has_events: false,
                });
            }
            PgOutputMessage::Commit { end_lsn, .. } => self.commit(end_lsn)?,
            PgOutputMessage::Origin { .. } | PgOutputMessage::Type { .. } => {}
            PgOutputMessage::StreamStart { xid, .. } => self.stream_start(xid)?,
            PgOutputMessage::StreamStop => {
                if self.streaming.take().is_none() {
                    return Err(protocol("Stream Stop without Stream Start"));
                }
            }
            PgOutputMessage::StreamAbort { xid, subxid } => self.stream_abort(xid, subxid),
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => self.stream_commit(xid, commit_lsn, end_lsn, commit_time)?,
            PgOutputMessage::Relation(relation) => {
                if let Some((old, new)) = self.relations.apply(&relation).await? {
                    // Rows already buffered use the old schema.
                    self.seal_builders()?;
                    let skip = self.open.as_ref().is_some_and(|t| t.skip);
                    if !skip {
                        info!(table = %new.name, "table schema changed");
                        self.events.push(CdcEvent::SchemaChange { old, new });
                        self.mark_event();
                    }
                }
            }
            PgOutputMessage::Insert { relation_id, new } => {
                self.change(relation_id, ChangeOp::Insert, Some(&new), None, size)?;
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            } => {
                let old = old.as_ref().map(old_tuple);
                self.change(relation_id, ChangeOp::Update, Some(&new), old, size)?;
            }
            PgOutputMessage::Delete { relation_id, old } => {
                self.change(
                    relation_id,
                    ChangeOp::Delete,
                    None,
                    Some(old_tuple(&old)),
                    size,
                )?;
            }
            PgOutputMessage::Truncate {
                options,
                relation_ids,
            } => {
                let Some(open) = &self.open else {
                    return Err(protocol("Truncate outside a transaction"));
                };
                if open.skip {
                    return Ok(());
                }
                let commit_lsn = open.commit_lsn;
                let mut tables = Vec::with_capacity(relation_ids.len());
                for id in relation_ids {
                    let table = self.relations.get(TableId(id))?;
                    if !self.copied_before(table.id, commit_lsn) {
                        tables.push(table);
                    }
                }
                if !tables.is_empty() {
                    self.seal_builders()?;
                    self.events.push(CdcEvent::Truncate {
                        tables,
                        cascade: options & 1 != 0,
                        restart_identity: options & 2 != 0,
                        commit_lsn,
                    });
                    self.mark_event();
                }
            }
            PgOutputMessage::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                if self.open.as_ref().is_some_and(|t| t.skip) {
                    return Ok(());
                }
                self.seal_builders()?;
                self.events.push(CdcEvent::Message {
                    transactional,
                    lsn,
                    prefix: prefix.to_owned(),
                    content: Bytes::copy_from_slice(content),
                });
                if transactional && self.open.is_some() {
                    self.mark_event();
                } else {
                    // A non-transactional message stands alone.
                    self.pending_transactions += 1;
                    self.pending_end = self.pending_end.max(lsn);
                    self.pending_since.get_or_insert_with(Instant::now);
                }
            }
        }
        Ok(())
    }

    fn mark_event(&mut self) {
        if let Some(open) = &mut self.open {
            open.has_events = true;
        }
    }

    /// Whether the table's backfill snapshot already contains a transaction
    /// committed at `commit_lsn`.
    fn copied_before(&self, table: TableId, commit_lsn: Lsn) -> bool {
        self.copied_at
            .get(&table)
            .is_some_and(|at| commit_lsn < *at)
    }

    fn change(
        &mut self,
        relation_id: u32,
        op: ChangeOp,
        new: Option<&pgoutput::TupleData<'_>>,
        old: Option<&pgoutput::TupleData<'_>>,
        bytes: usize,
    ) -> Result<()> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| protocol("row change outside a transaction"))?;
        let sequence = open.next_sequence;
        open.next_sequence = open.next_sequence.wrapping_add(1);
        if open.skip {
            return Ok(());
        }
        let stamp = ChangeStamp {
            commit_lsn: open.commit_lsn,
            commit_time: open.commit_time,
            sequence,
        };
        let id = TableId(relation_id);
        if self.copied_before(id, stamp.commit_lsn) {
            return Ok(());
        }
        let index = match self.builder_index.get(&id) {
            Some(index) => *index,
            None => {
                let table = self.relations.get(id)?;
                self.builders.push(ChangeBatchBuilder::new(table));
                self.builder_index.insert(id, self.builders.len() - 1);
                self.builders.len() - 1
            }
        };
        self.builders[index].append(op, stamp, new, old)?;
        self.pending_rows += 1;
        self.pending_bytes += bytes;
        self.mark_event();
        Ok(())
    }
}

fn old_tuple<'a, 'b>(old: &'b OldTuple<'a>) -> &'b pgoutput::TupleData<'a> {
    match old {
        OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
    }
}

fn malformed(error: pgoutput::PgOutputError) -> Error {
    Error::with_source(ErrorKind::Protocol, "malformed pgoutput message", error)
}

fn protocol(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected pgoutput message order: {what}"),
    )
}

#[async_trait]
impl CdcStream for PostgresCdcStream {
    async fn next_batch(&mut self) -> Result<Option<CdcBatch>> {
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            if self.durable.has_changed().unwrap_or(false) {
                let lsn = *self.durable.borrow_and_update();
                self.confirm_durable(lsn).await?;
            }
            if self.open_transaction_full() {
                return self.take_partial().map(Some);
            }
            if self.replay.is_some() {
                self.replay_step().await?;
                continue;
            }
            let between_transactions = self.open.is_none();
            if between_transactions && self.pending_transactions > 0 {
                let filled = self.fill_deadline().is_some_and(|d| Instant::now() >= d);
                if self.batch_full() || filled || shutdown_deadline.is_some() {
                    return self.take_batch();
                }
            }
            if shutdown_deadline.is_some() && between_transactions {
                return Ok(None);
            }

            let status_due = self.last_status + self.batch.status_interval;
            let stalled_at = self.last_heard + self.batch.stall_timeout;
            let mut wake = status_due.min(stalled_at);
            if between_transactions {
                if let Some(fill) = self.fill_deadline() {
                    wake = wake.min(fill);
                }
            }
            if let Some(deadline) = shutdown_deadline {
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        "shutdown timed out in the middle of a transaction; nothing of it was stored \
                         and it will be streamed again on restart",
                    ));
                }
                wake = wake.min(deadline);
            }

            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if shutdown_deadline.is_none() => {
                    debug!("shutdown requested; finishing the transaction being received");
                    shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                message = self.stream.next_message() => {
                    self.last_heard = Instant::now();
                    match message? {
                        Some(ReplicationMessage::XLogData { wal_end, data, .. }) => {
                            self.received = self.received.max(wal_end);
                            self.receive(&data).await?;
                        }
                        Some(ReplicationMessage::Keepalive { wal_end, reply_requested, .. }) => {
                            self.received = self.received.max(wal_end);
                            if self.open.is_none() && self.pending_transactions == 0 {
                                self.empty_end = self.empty_end.max(wal_end);
                            }
                            if reply_requested {
                                self.send_status(true).await?;
                            }
                        }
                        None => {
                            warn!("the server closed the replication connection");
                            // Nothing unconfirmed is lost: the slot replays it.
                            return Err(Error::new(
                                ErrorKind::Connection,
                                "the server closed the replication connection; restart the pipeline to \
                                 resume from the last stored position",
                            ));
                        }
                    }
                }
                changed = self.durable.changed() => {
                    // The stream holds a sender itself, so this never fails.
                    if changed.is_ok() {
                        let lsn = *self.durable.borrow_and_update();
                        self.confirm_durable(lsn).await?;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let silent = self.last_heard.elapsed();
                    if silent >= self.batch.stall_timeout {
                        warn!(silent_s = silent.as_secs(), "the replication connection stalled");
                        return Err(Error::new(
                            ErrorKind::Connection,
                            format!(
                                "Postgres sent nothing for {} s although asked for a keepalive \
                                 (BatchConfig::stall_timeout): the replication connection stalled",
                                silent.as_secs()
                            ),
                        ));
                    }
                    if Instant::now() >= status_due {
                        if let Some(progress) = self.take_idle_progress() {
                            // Confirmed (and the status sent) once the sink stored it.
                            self.last_status = Instant::now();
                            return Ok(Some(progress));
                        }
                        // After a silence, ask for a keepalive at once: a
                        // live server answers, a stalled connection does not.
                        self.send_status(silent >= self.batch.status_interval).await?;
                    }
                }
            }
        }
    }

    async fn confirm_durable(&mut self, lsn: Lsn) -> Result<()> {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            self.send_status(false).await?;
        }
        Ok(())
    }

    fn durable_sender(&self) -> tokio::sync::watch::Sender<Lsn> {
        self.durable_sender.clone()
    }

    async fn close(mut self) -> Result<()> {
        let status = self.send_status(false).await;
        self.stream.finish().await;
        status
    }
}
