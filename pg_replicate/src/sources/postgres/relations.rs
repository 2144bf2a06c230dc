//! Table schemas as the change stream knows them: learned at start-up from
//! the catalog and updated from pgoutput Relation messages.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::postgres::catalog;
use crate::postgres::pgoutput::RelationMessage;
use crate::types::{ArrayForm, ColumnSchema, ReplicaIdentity, TableId, TableName, TableSchema};
use crate::{Error, ErrorKind, Result};

pub(crate) struct RelationCache {
    query: Client,
    tables: HashMap<TableId, Arc<TableSchema>>,
    /// The source's array form, for columns a Relation message adds.
    array_form: ArrayForm,
}

impl RelationCache {
    pub(crate) fn new(query: Client, tables: Vec<Arc<TableSchema>>, array_form: ArrayForm) -> Self {
        Self {
            query,
            tables: tables.into_iter().map(|t| (t.id, t)).collect(),
            array_form,
        }
    }

    pub(crate) fn get(&self, id: TableId) -> Result<Arc<TableSchema>> {
        self.tables
            .get(&id)
            .cloned()
            .ok_or_else(|| unknown_table(id))
    }

    /// Records a Relation message; returns the old and new schema when the
    /// table's schema differs from what was known.
    pub(crate) async fn apply(
        &mut self,
        relation: &RelationMessage<'_>,
    ) -> Result<Option<(Arc<TableSchema>, Arc<TableSchema>)>> {
        let id = TableId(relation.id);
        // With publish_via_partition_root the server also describes the
        // partition a change was made in, but sends the change as the
        // partitioned table: a Relation message alone is not a change.
        let Some(known) = self.tables.get(&id).cloned() else {
            tracing::debug!(
                relation = relation.name,
                oid = relation.id,
                "Relation message of a table not replicated; ignored"
            );
            return Ok(None);
        };
        let replica_identity =
            ReplicaIdentity::from_code(relation.replica_identity).ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "Relation message for {} has unknown replica identity {:?}",
                        known.name, relation.replica_identity as char
                    ),
                )
            })?;
        let full = replica_identity == ReplicaIdentity::Full;
        let same = known.name.schema == relation.namespace
            && known.name.name == relation.name
            && known.replica_identity == replica_identity
            && known.columns.len() == relation.columns.len()
            && known.columns.iter().zip(&relation.columns).all(|(k, r)| {
                k.name == r.name
                    && k.pg_type.oid == r.type_oid
                    && k.pg_type.modifier == r.type_modifier
                    && (full || k.identity == r.is_key())
            });
        if same {
            return Ok(None);
        }

        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let previous = known.columns.iter().find(|k| k.name == column.name);
            let pg_type = match previous {
                Some(p)
                    if p.pg_type.oid == column.type_oid
                        && p.pg_type.modifier == column.type_modifier =>
                {
                    p.pg_type.clone()
                }
                _ => catalog::pg_type(&self.query, column.type_oid, column.type_modifier).await?,
            };
            columns.push(ColumnSchema {
                name: column.name.to_owned(),
                pg_type,
                nullable: previous.is_none_or(|p| p.nullable),
                // Under FULL every column is flagged as key; keep the real key.
                identity: if full {
                    previous.is_some_and(|p| p.identity)
                } else {
                    column.is_key()
                },
                array_form: self.array_form,
            });
        }
        let new = Arc::new(TableSchema {
            id,
            name: TableName::new(relation.namespace, relation.name),
            columns,
            replica_identity,
        });
        self.tables.insert(id, new.clone());
        Ok(Some((known, new)))
    }
}

fn unknown_table(id: TableId) -> Error {
    Error::new(
        ErrorKind::Schema,
        format!(
            "the stream carries changes of table oid {id}, which was not part of the publication at \
             start-up (added while the pipeline ran); restart the pipeline so it copies the table first"
        ),
    )
}
