//! [`FilesSink`]: the [`Sink`] writing data files and their manifests.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use async_trait::async_trait;
use tracing::{debug, info};

use super::config::FilesSinkConfig;
use super::durable::{create_dir, io_error};
use super::manifest::{load_manifests, Manifest, ManifestEntry, SinkState, FILES_FORMAT_VERSION};
use super::record::{changes_from, FileLayout, FILE_LSN_COLUMN};
use super::storage::Storage;
use super::writer::{FinishedFile, OpenFile};
use crate::sinks::Sink;
use crate::types::change::{CdcBatch, CdcEvent, ResumptionState};
use crate::types::{Lsn, TableId, TableSchema};
use crate::{Error, ErrorKind, Result};

/// The folder of files being written, under the root.
const TMP_DIR: &str = "_tmp";

/// A sink writing each table's rows and changes as data files (Parquet or
/// CSV) in a folder per table, listed by the folder's manifest once
/// complete. See the [module documentation](super).
pub struct FilesSink {
    config: FilesSinkConfig,
    storage: Storage,
    tables: HashMap<TableId, TableFiles>,
    /// Manifests found in the storage, by table, with their folders.
    stored: HashMap<TableId, (String, Manifest)>,
    state: SinkState,
    /// End LSN of the last batch received.
    position: Lsn,
    /// The last batch ended inside a transaction.
    in_transaction: bool,
    next_tmp: u64,
}

/// A table's files: the manifest as stored, and what is not listed yet.
struct TableFiles {
    schema: Arc<TableSchema>,
    layout: FileLayout,
    folder: String,
    manifest: Manifest,
    open: Option<OpenFile>,
    /// Finished files and truncates, in order, not yet listed.
    pending: Vec<Pending>,
    /// Since when the table has data not listed: the position before it
    /// (a restart must ask for changes from there) and the moment.
    unlisted: Option<(Lsn, Instant)>,
}

enum Pending {
    File(FinishedFile),
    Truncate {
        lsn: Lsn,
        cascade: bool,
        restart_identity: bool,
    },
}

impl FilesSink {
    /// Opens the sink on `config.root`, creating the folder when missing.
    /// The destination is read when the pipeline starts (an object store's
    /// bucket and credentials are checked then); files there that no
    /// manifest lists, left by a process that stopped while publishing
    /// them, are removed.
    pub fn open(config: FilesSinkConfig) -> Result<Self> {
        config.validate()?;
        create_dir(&config.root)?;
        let storage = config.storage();
        Ok(Self {
            config,
            storage,
            tables: HashMap::new(),
            stored: HashMap::new(),
            state: SinkState::default(),
            position: Lsn::ZERO,
            in_transaction: false,
            next_tmp: 0,
        })
    }

    /// The sink's configuration.
    pub fn config(&self) -> &FilesSinkConfig {
        &self.config
    }

    /// Forgets everything not listed and reads the manifests and the
    /// state again.
    async fn reload(&mut self) -> Result<()> {
        let tmp = self.config.root.join(TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_error("clear", &tmp, e))?;
        }
        create_dir(&tmp)?;
        self.storage.check().await?;
        self.tables.clear();
        self.stored.clear();
        self.state = SinkState::load(&self.storage).await?;
        // The stream starts again at this position or later.
        self.position = self.state.last_lsn.unwrap_or(Lsn::ZERO);
        self.in_transaction = false;
        for (folder, manifest) in load_manifests(&self.storage).await? {
            remove_unlisted(&self.storage, &folder, &manifest).await?;
            self.stored.insert(manifest.id(), (folder, manifest));
        }
        Ok(())
    }

    /// The table's files, registered on first sight and brought to
    /// `schema` (closing the open file when the schema changed).
    fn table(&mut self, schema: &Arc<TableSchema>) -> Result<&mut TableFiles> {
        if !self.tables.contains_key(&schema.id) {
            let (folder, manifest) = match self.stored.get(&schema.id) {
                Some((folder, manifest)) => (folder.clone(), manifest.clone()),
                None => (self.new_folder(schema), Manifest::empty(schema)),
            };
            self.tables.insert(
                schema.id,
                TableFiles {
                    schema: schema.clone(),
                    layout: FileLayout::new(schema),
                    folder,
                    manifest,
                    open: None,
                    pending: Vec::new(),
                    unlisted: None,
                },
            );
        }
        let Some(table) = self.tables.get_mut(&schema.id) else {
            return Err(Error::new(
                ErrorKind::Internal,
                "a registered table is missing",
            ));
        };
        if !Arc::ptr_eq(&table.schema, schema) && table.schema != *schema {
            // A file holds one schema: later rows go to a new file.
            table.finish_open()?;
            table.schema = schema.clone();
            table.layout = FileLayout::new(schema);
        }
        Ok(table)
    }

    /// A folder for a table seen for the first time: `schema.table`,
    /// escaped, with the oid appended when a dropped table of the same
    /// name holds that folder.
    fn new_folder(&self, schema: &TableSchema) -> String {
        let name = format!(
            "{}.{}",
            escape(&schema.name.schema),
            escape(&schema.name.name)
        );
        let taken = self.stored.values().any(|(folder, _)| *folder == name)
            || self.tables.values().any(|t| t.folder == name);
        if taken {
            format!("{name}.{}", schema.id)
        } else {
            name
        }
    }

    fn tmp_path(&mut self) -> PathBuf {
        self.next_tmp += 1;
        self.config.root.join(TMP_DIR).join(format!(
            "{}.{}",
            self.next_tmp,
            self.config.format.extension()
        ))
    }

    /// Appends `rows` (already laid out for the file) to the table's open
    /// file, opening one when needed, and closes it past the roll limits.
    fn append(&mut self, id: TableId, rows: &RecordBatch) -> Result<()> {
        let lsns = lsn_range(rows);
        let needs_file = self.tables.get(&id).is_some_and(|t| t.open.is_none());
        let path = needs_file.then(|| self.tmp_path());
        let (format, roll, position) = (self.config.format, self.config.roll, self.position);
        let Some(table) = self.tables.get_mut(&id) else {
            return Err(Error::new(
                ErrorKind::Internal,
                "a registered table is missing",
            ));
        };
        table.unlisted.get_or_insert((position, Instant::now()));
        if let Some(path) = path {
            table.open = Some(OpenFile::create(&path, format, &table.layout.schema)?);
        }
        if let Some(open) = &mut table.open {
            open.write(rows, lsns)?;
            if open.rows >= roll.max_rows || open.bytes() >= roll.max_bytes {
                table.finish_open()?;
            }
        }
        Ok(())
    }

    /// Lists the files of every table that has a closed file waiting or
    /// data older than the roll policy's `max_age`, then stores the state.
    async fn commit_due(&mut self) -> Result<()> {
        let max_age = self.config.roll.max_age;
        let (extension, until) = (self.config.format.extension(), self.position);
        let mut committed = 0;
        for table in self.tables.values_mut() {
            let due = !table.pending.is_empty()
                || table
                    .unlisted
                    .is_some_and(|(_, since)| since.elapsed() >= max_age);
            if due {
                table.commit(&self.storage, until, extension).await?;
                committed += 1;
            }
        }
        if committed > 0 {
            self.state = SinkState {
                format_version: FILES_FORMAT_VERSION,
                last_lsn: Some(self.durable()),
            };
            self.state.store(&self.storage).await?;
            debug!(tables = committed, position = %until, "data files listed");
        }
        Ok(())
    }

    /// The position up to which everything received is listed.
    fn durable(&self) -> Lsn {
        self.tables
            .values()
            .filter_map(|t| t.unlisted.map(|(lsn, _)| lsn))
            .min()
            .unwrap_or(self.position)
    }
}

impl TableFiles {
    /// Closes the open file; it waits to be listed.
    fn finish_open(&mut self) -> Result<()> {
        if let Some(open) = self.open.take() {
            if open.rows == 0 {
                return Ok(());
            }
            self.pending.push(Pending::File(open.finish()?));
        }
        Ok(())
    }

    /// Drops everything not listed.
    fn discard_unlisted(&mut self) {
        self.open = None;
        for pending in self.pending.drain(..) {
            if let Pending::File(file) = pending {
                let _ = std::fs::remove_file(&file.path);
            }
        }
        self.unlisted = None;
    }

    /// Moves the waiting files into the table's folder and lists them (and
    /// the truncates) in the manifest, which then covers changes up to
    /// `until`.
    async fn commit(&mut self, storage: &Storage, until: Lsn, extension: &str) -> Result<()> {
        self.finish_open()?;
        let mut manifest = self.manifest.clone();
        let pending = std::mem::take(&mut self.pending);
        let mut published = false;
        for item in &pending {
            match item {
                Pending::File(file) => {
                    let (first, last) = file.lsns.unwrap_or((0, 0));
                    let (first, last) = (Lsn(first as u64), Lsn(last as u64));
                    let stem = format!("changes-{:016X}-{:016X}", first.0, last.0);
                    let name =
                        publish_file(storage, &self.folder, &mut manifest, file, &stem, extension)
                            .await?;
                    published = true;
                    manifest.entries.push(ManifestEntry::Changes {
                        file: name,
                        rows: file.rows,
                        bytes: file.bytes,
                        first_lsn: first,
                        last_lsn: last,
                    });
                }
                Pending::Truncate {
                    lsn,
                    cascade,
                    restart_identity,
                } => manifest.entries.push(ManifestEntry::Truncate {
                    lsn: *lsn,
                    cascade: *cascade,
                    restart_identity: *restart_identity,
                }),
            }
        }
        if published {
            storage.sync_folder(&self.folder)?;
        }
        manifest.covers_until = manifest.covers_until.max(until);
        manifest.store(storage, &self.folder).await?;
        self.manifest = manifest;
        self.unlisted = None;
        Ok(())
    }
}

#[async_trait]
impl Sink for FilesSink {
    async fn resumption_state(&mut self) -> Result<ResumptionState> {
        // A new run (or a retry) receives everything not listed again.
        self.reload().await?;
        let copied_tables = self
            .stored
            .values()
            .filter_map(|(_, m)| m.copied_at.map(|lsn| (m.id(), lsn)))
            .collect();
        Ok(ResumptionState {
            copied_tables,
            last_lsn: self.state.last_lsn,
        })
    }

    async fn write_table_schemas(&mut self, tables: &[Arc<TableSchema>]) -> Result<()> {
        for table in tables {
            self.table(table)?;
        }
        Ok(())
    }

    async fn begin_table_copy(&mut self, table: &Arc<TableSchema>) -> Result<()> {
        self.table(table)?.discard_unlisted();
        Ok(())
    }

    async fn write_table_rows(
        &mut self,
        table: &Arc<TableSchema>,
        rows: RecordBatch,
    ) -> Result<()> {
        let records = self.table(table)?.layout.copied_rows(&rows)?;
        self.append(table.id, &records)
    }

    async fn end_table_copy(&mut self, table: &Arc<TableSchema>, snapshot_lsn: Lsn) -> Result<()> {
        let extension = self.config.format.extension();
        let Some(files) = self.tables.get_mut(&table.id) else {
            return Err(not_announced(table));
        };
        files.finish_open()?;
        // The copy replaces whatever the manifest listed before.
        let mut manifest = files.manifest.clone();
        let replaced: Vec<String> = manifest
            .entries
            .drain(..)
            .filter_map(|e| e.file().map(str::to_owned))
            .collect();
        let mut rows = 0;
        for pending in std::mem::take(&mut files.pending) {
            let Pending::File(file) = pending else {
                continue;
            };
            let stem = format!("copy-{:016X}", snapshot_lsn.0);
            let name = publish_file(
                &self.storage,
                &files.folder,
                &mut manifest,
                &file,
                &stem,
                extension,
            )
            .await?;
            rows += file.rows;
            manifest.entries.push(ManifestEntry::Copy {
                file: name,
                rows: file.rows,
                bytes: file.bytes,
            });
        }
        if !manifest.entries.is_empty() {
            self.storage.sync_folder(&files.folder)?;
        }
        manifest.copied_at = Some(snapshot_lsn);
        manifest.covers_until = snapshot_lsn;
        manifest.store(&self.storage, &files.folder).await?;
        for name in replaced {
            if manifest.entries.iter().all(|e| e.file() != Some(&name)) {
                self.storage
                    .delete(&format!("{}/{name}", files.folder))
                    .await?;
            }
        }
        info!(table = %table.name, rows, files = manifest.entries.len(), "copy files listed");
        files.manifest = manifest.clone();
        files.unlisted = None;
        self.stored
            .insert(table.id, (files.folder.clone(), manifest));
        Ok(())
    }

    async fn write_cdc_batch(&mut self, batch: CdcBatch) -> Result<Lsn> {
        for event in &batch.events {
            match event {
                CdcEvent::Changes(changes) => {
                    let files = self.table(&changes.table)?;
                    let Some(fresh) = changes_from(&changes.batch, files.manifest.covers_until)?
                    else {
                        continue;
                    };
                    let records = files.layout.changes(&changes.table, &fresh)?;
                    self.append(changes.table.id, &records)?;
                }
                CdcEvent::Truncate {
                    tables,
                    cascade,
                    restart_identity,
                    commit_lsn,
                } => {
                    let position = self.position;
                    for table in tables {
                        let files = self.table(table)?;
                        if *commit_lsn < files.manifest.covers_until {
                            continue;
                        }
                        files.finish_open()?;
                        files.pending.push(Pending::Truncate {
                            lsn: *commit_lsn,
                            cascade: *cascade,
                            restart_identity: *restart_identity,
                        });
                        files.unlisted.get_or_insert((position, Instant::now()));
                    }
                }
                CdcEvent::SchemaChange { new, .. } => {
                    self.table(new)?;
                }
                CdcEvent::Message { .. } => {}
            }
        }
        self.position = self.position.max(batch.end_lsn);
        self.in_transaction = batch.continues;
        if !batch.continues {
            self.commit_due().await?;
        }
        Ok(self.durable())
    }

    async fn store_while_idle(&mut self) -> Result<Option<Lsn>> {
        if self.in_transaction {
            return Ok(None);
        }
        let before = self.durable();
        self.commit_due().await?;
        let after = self.durable();
        Ok((after > before).then_some(after))
    }
}

/// Publishes the finished `file` into `folder` as
/// `<stem>-<number>.<extension>`, numbered by `manifest`; its name.
async fn publish_file(
    storage: &Storage,
    folder: &str,
    manifest: &mut Manifest,
    file: &FinishedFile,
    stem: &str,
    extension: &str,
) -> Result<String> {
    let name = format!("{stem}-{:06}.{extension}", manifest.next_file);
    manifest.next_file += 1;
    storage
        .publish(&file.path, &format!("{folder}/{name}"))
        .await?;
    Ok(name)
}

/// Removes the data files of `folder` that `manifest` does not list.
async fn remove_unlisted(storage: &Storage, folder: &str, manifest: &Manifest) -> Result<()> {
    let listed: HashSet<&str> = manifest
        .entries
        .iter()
        .filter_map(ManifestEntry::file)
        .collect();
    for name in storage.files(folder).await? {
        let data = name.starts_with("copy-") || name.starts_with("changes-");
        if data && !listed.contains(name.as_str()) {
            storage.delete(&format!("{folder}/{name}")).await?;
        }
    }
    Ok(())
}

fn not_announced(table: &TableSchema) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("{} was not announced before its rows", table.name),
    )
}

/// The smallest and largest commit LSN of file rows.
fn lsn_range(rows: &RecordBatch) -> Option<(i64, i64)> {
    let lsns = rows
        .column_by_name(FILE_LSN_COLUMN)?
        .as_primitive_opt::<Int64Type>()?;
    Some((arrow::compute::min(lsns)?, arrow::compute::max(lsns)?))
}

/// A Postgres name as part of a folder name: letters, digits, `_` and `-`
/// kept, every other byte as `!XX` (characters object stores accept in
/// keys unescaped).
fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("!{b:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn folder_names_keep_schema_and_table_apart() {
        assert_eq!(escape("public"), "public");
        assert_eq!(escape("a.b"), "a!2Eb");
        assert_eq!(escape("Größe x"), "Gr!C3!B6!C3!9Fe!20x");
    }
}
