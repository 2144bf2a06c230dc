//! Catalog queries: server settings, publications, slots and table schemas.

use tokio_postgres::Client;

use crate::types::{
    ArrayForm, ColumnSchema, Lsn, PgType, ReplicaIdentity, TableId, TableName, TableSchema,
};
use crate::{Error, ErrorKind, Result};

fn query_error(what: &str, error: tokio_postgres::Error) -> Error {
    let kind = if error.is_closed() {
        ErrorKind::Connection
    } else {
        ErrorKind::SourceSetup
    };
    Error::with_source(kind, format!("could not {what}"), error)
}

/// Fails unless the server runs with `wal_level = logical`.
pub async fn check_wal_level(client: &Client) -> Result<()> {
    let row = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(|e| query_error("read wal_level", e))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(Error::new(
            ErrorKind::SourceSetup,
            format!(
                "the server runs with wal_level = {level}, but logical replication needs wal_level = logical; \
                 run ALTER SYSTEM SET wal_level = logical and restart the server"
            ),
        ));
    }
    Ok(())
}

/// What a publication publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationInfo {
    /// Whether updates are published.
    pub publishes_updates: bool,
    /// Whether deletes are published.
    pub publishes_deletes: bool,
}

/// Reads a publication, failing clearly when it does not exist.
pub async fn publication(client: &Client, name: &str) -> Result<PublicationInfo> {
    let rows = client
        .query(
            "SELECT pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| query_error("read pg_publication", e))?;
    let row = rows.first().ok_or_else(|| {
        Error::new(
            ErrorKind::SourceSetup,
            format!(
                "publication `{name}` does not exist in this database; create it with \
                 CREATE PUBLICATION {} FOR TABLE ... (or FOR ALL TABLES)",
                crate::types::table::quote_identifier(name)
            ),
        )
    })?;
    Ok(PublicationInfo {
        publishes_updates: row.get(0),
        publishes_deletes: row.get(1),
    })
}

/// The names of the tables a publication publishes, in name order.
pub async fn publication_tables(client: &Client, publication: &str) -> Result<Vec<TableId>> {
    let rows = client
        .query(
            "SELECT c.oid FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = $1 ORDER BY p.schemaname, p.tablename",
            &[&publication],
        )
        .await
        .map_err(|e| query_error("list the publication's tables", e))?;
    Ok(rows.iter().map(|r| TableId(r.get::<_, u32>(0))).collect())
}

/// The server's version as `server_version_num` (150008 for 15.8).
pub async fn server_version_num(client: &Client) -> Result<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| query_error("read the server version", e))?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// What a publication publishes of one table (Postgres 15+): its column
/// list and row filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishedTable {
    /// The published columns, when the publication has a column list.
    pub columns: Option<Vec<String>>,
    /// The row filter (an SQL expression over the table's columns).
    pub row_filter: Option<String>,
}

/// The column lists and row filters of a publication's tables, by table
/// (empty before Postgres 15, which has neither).
pub async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<std::collections::HashMap<TableName, PublishedTable>> {
    let mut published = std::collections::HashMap::new();
    if server_version_num(client).await? < 150_000 {
        return Ok(published);
    }
    // `attnames` lists every column when there is no column list; the
    // column list is compared with the table's columns by the caller.
    let rows = client
        .query(
            "SELECT p.schemaname::text, p.tablename::text, p.attnames::text[], p.rowfilter, \
                    EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication pp ON pp.oid = r.prpubid \
                            JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                            WHERE pp.pubname = p.pubname AND n.nspname = p.schemaname \
                              AND c.relname = p.tablename AND r.prattrs IS NOT NULL) \
             FROM pg_publication_tables p WHERE p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| query_error("read the publication's column lists and row filters", e))?;
    for row in rows {
        let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let has_column_list: bool = row.get(4);
        published.insert(
            name,
            PublishedTable {
                columns: if has_column_list { row.get(2) } else { None },
                row_filter: row.get(3),
            },
        );
    }
    Ok(published)
}

/// The relations holding a table's rows, with their sizes in blocks: the
/// table itself, or the leaf partitions of a partitioned table.
pub async fn leaf_relations(
    client: &Client,
    id: TableId,
    name: &TableName,
) -> Result<Vec<(TableName, u64)>> {
    // pg_partition_tree lists nothing for a table that is not partitioned.
    // Sizes come from the current catalog: NULL for a relation dropped
    // after the snapshot (which still shows it).
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, \
                    pg_relation_size(c.oid) / current_setting('block_size')::int8 \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid IN (SELECT relid FROM pg_partition_tree($1::oid) WHERE isleaf) \
                OR (c.oid = $1 AND c.relkind <> 'p') \
             ORDER BY 1, 2",
            &[&id.0],
        )
        .await
        .map_err(|e| query_error("list the table's partitions and sizes", e))?;
    let dropped = || {
        Error::new(
            ErrorKind::Schema,
            format!(
                "table {name} (oid {id}) disappeared before its copy (dropped during the backfill?); \
                 restart the pipeline"
            ),
        )
    };
    if rows.is_empty() {
        // A partitioned table without partitions has no rows; one that was
        // dropped has no size any more.
        let exists = client
            .query_one("SELECT pg_relation_size($1::oid) IS NOT NULL", &[&id.0])
            .await
            .map_err(|e| query_error("look up the table", e))?
            .get::<_, bool>(0);
        return if exists {
            Ok(Vec::new())
        } else {
            Err(dropped())
        };
    }
    rows.iter()
        .map(|r| {
            let relation = TableName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            let blocks = r.get::<_, Option<i64>>(2).ok_or_else(dropped)?;
            Ok((relation, u64::try_from(blocks).unwrap_or(0)))
        })
        .collect()
}

/// Looks up a table by name.
pub async fn table_id(client: &Client, name: &TableName) -> Result<TableId> {
    let rows = client
        .query(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(|e| query_error("look up the table", e))?;
    rows.first()
        .map(|r| TableId(r.get::<_, u32>(0)))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Schema,
                format!("table {name} does not exist (or is not an ordinary table); check the schema and table name"),
            )
        })
}

/// Reads a table's schema: its name, replica identity and the columns
/// pgoutput publishes (not dropped, not generated), in column order.
pub async fn table_schema(client: &Client, id: TableId) -> Result<TableSchema> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, c.relreplident::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&id.0],
        )
        .await
        .map_err(|e| query_error("read the table", e))?;
    let row = rows.first().ok_or_else(|| {
        Error::new(
            ErrorKind::Schema,
            format!(
                "table with oid {id} disappeared while reading its schema; restart the pipeline"
            ),
        )
    })?;
    let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
    let identity_code: String = row.get(2);
    let replica_identity = identity_code
        .bytes()
        .next()
        .and_then(ReplicaIdentity::from_code)
        .unwrap_or(ReplicaIdentity::Default);

    // Identity columns: the replica identity index for `i`, none for `n`,
    // else the primary key (also kept under FULL, for sinks that upsert).
    let columns = client
        .query(
            "SELECT a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod), \
                    a.attnotnull, CASE WHEN t.typcategory = 'A' THEN t.typelem END, \
                    COALESCE(( \
                        SELECT a.attnum = ANY (i.indkey::int2[]) FROM pg_index i \
                        WHERE i.indrelid = a.attrelid AND $2 <> 'n' \
                          AND CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END \
                        LIMIT 1), false) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&id.0, &identity_code],
        )
        .await
        .map_err(|e| query_error("read the table's columns", e))?;
    let columns = columns
        .iter()
        .map(|r| ColumnSchema {
            name: r.get(0),
            pg_type: PgType {
                oid: r.get(1),
                modifier: r.get(2),
                name: r.get(3),
                element_oid: r.get(5),
            },
            nullable: !r.get::<_, bool>(4),
            identity: r.get(6),
            // The source sets its configured form.
            array_form: ArrayForm::default(),
        })
        .collect();
    Ok(TableSchema {
        id,
        name,
        columns,
        replica_identity,
    })
}

/// A type's display name and, for arrays, element type, for columns learned
/// from a pgoutput Relation message.
pub async fn pg_type(client: &Client, oid: u32, modifier: i32) -> Result<PgType> {
    let row = client
        .query_one(
            "SELECT format_type($1, $2), \
                    (SELECT CASE WHEN typcategory = 'A' THEN typelem END FROM pg_type WHERE oid = $1)",
            &[&oid, &modifier],
        )
        .await
        .map_err(|e| query_error("look up a column type", e))?;
    Ok(PgType {
        oid,
        modifier,
        name: row.get(0),
        element_oid: row.get(1),
    })
}

/// State of a replication slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The output plugin (`pgoutput` for slots this library creates).
    pub plugin: Option<String>,
    /// The database the slot belongs to.
    pub database: Option<String>,
    /// The PID of the process streaming from it, when in use.
    pub active_pid: Option<i32>,
    /// Position up to which changes were confirmed.
    pub confirmed_flush: Option<Lsn>,
    /// `pg_replication_slots.wal_status` (Postgres 13+): `reserved`,
    /// `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

/// Reads a replication slot, `None` when it does not exist.
pub async fn slot(client: &Client, name: &str) -> Result<Option<SlotInfo>> {
    // Through to_jsonb, columns a server version lacks read as NULL.
    let rows = client
        .query(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text, \
                    to_jsonb(s) ->> 'wal_status' \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| query_error("read pg_replication_slots", e))?;
    Ok(rows.first().map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
        wal_status: r.get(4),
    }))
}

/// How much WAL a replication slot holds back, for monitoring: a slot
/// whose consumer stops or falls behind keeps WAL on the server's disk
/// until it catches up, or until `max_slot_wal_keep_size` invalidates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHealth {
    /// A process streams from the slot.
    pub active: bool,
    /// Bytes of WAL the server keeps for the slot (from its `restart_lsn`
    /// to the current WAL position).
    pub retained_bytes: Option<u64>,
    /// Bytes of WAL written since the slot's confirmed position: how far
    /// the sink's stored data lags the server.
    pub unconfirmed_bytes: Option<u64>,
    /// `wal_status` (Postgres 13+): `reserved` and `extended` are safe,
    /// `unreserved` means the WAL is about to be removed, `lost` that the
    /// slot is invalidated and can no longer be streamed from.
    pub wal_status: Option<String>,
    /// Bytes that can still be written before the slot is invalidated
    /// (`safe_wal_size`, Postgres 13+); `None` without a
    /// `max_slot_wal_keep_size` limit.
    pub safe_wal_bytes: Option<i64>,
}

/// Reads how much WAL replication slot `name` holds back; `None` when it
/// does not exist. Runs on the primary (a standby has no current WAL
/// position to measure against).
pub async fn slot_health(client: &Client, name: &str) -> Result<Option<SlotHealth>> {
    let rows = client
        .query(
            "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                    to_jsonb(s) ->> 'wal_status', (to_jsonb(s) ->> 'safe_wal_size')::bigint \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| query_error("read pg_replication_slots", e))?;
    let bytes = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Ok(rows.first().map(|r| SlotHealth {
        active: r.get(0),
        retained_bytes: bytes(r.get(1)),
        unconfirmed_bytes: bytes(r.get(2)),
        wal_status: r.get(3),
        safe_wal_bytes: r.get(4),
    }))
}
