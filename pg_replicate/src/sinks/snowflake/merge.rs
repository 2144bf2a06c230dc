//! The statements applying a landing table to its target table. Pure
//! text.
//!
//! Each statement is atomic on its own and can run again with the same
//! result, so a batch interrupted anywhere (`kill -9`) is applied again
//! from the start and converges; the state row moves after them (see
//! [`super::apply`]).
//!
//! 1. Landing rows flagged to keep stored values take them from the
//!    target row at their old key and clear their flags; rows of a moved
//!    key whose old row is gone (an interrupted run applied the batch in
//!    part) take them from the row at their new key, which that run wrote.
//! 2. A `MERGE` applies the last landing row of each key (by `_PGR_LSN`,
//!    `_PGR_SEQ`), the key's state after the batch: it deletes the keys
//!    whose last row is a delete and writes the others.
//!
//! A table without key can only be appended to: its target table carries
//! each row's change position (`_PGR_LSN`, `_PGR_SEQ`), and a change whose
//! row is already there, or landed twice (a request sent again after it
//! ran), is inserted once. Key columns (a primary key, a replica
//! identity index) hold no NULL, so keys compare with `=`.

use super::landing::{from_col, keep_col, LSN, OP, SEQ};
use super::schema::{column_name, key_columns, quote};
use crate::types::change::ChangeOp;
use crate::types::TableSchema;

/// The statements taking kept values of the flagged landing rows in
/// `rows` from the stored rows of `target` (step 1); with `history` (a
/// landing table that keeps unmerged changes) first from the last row each
/// key has there.
pub fn keep_statements(
    table: &TableSchema,
    rows: &str,
    target: &str,
    history: Option<&str>,
) -> Vec<String> {
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote(&column_name(c)))
        .collect();
    let keys = key_columns(table);
    let kept: Vec<usize> = (0..names.len()).filter(|i| !keys.contains(i)).collect();
    if keys.is_empty() || kept.is_empty() {
        return Vec::new();
    }
    let mut sets: Vec<String> = kept
        .iter()
        .map(|&i| {
            format!(
                "{0} = IFF(l.{1}, p.{0}, l.{0})",
                names[i],
                quote(&keep_col(i))
            )
        })
        .collect();
    sets.extend(
        kept.iter()
            .map(|&i| format!("{} = FALSE", quote(&keep_col(i)))),
    );
    let flagged: Vec<String> = kept
        .iter()
        .map(|&i| format!("l.{}", quote(&keep_col(i))))
        .collect();
    let at_origin: Vec<String> = keys
        .iter()
        .map(|&k| {
            format!(
                "p.{0} = COALESCE(l.{1}, l.{0})",
                names[k],
                quote(&from_col(k))
            )
        })
        .collect();
    let at_key: Vec<String> = keys
        .iter()
        .map(|&k| format!("p.{0} = l.{0}", names[k]))
        .collect();
    let moved: Vec<String> = keys
        .iter()
        .map(|&k| format!("l.{} IS NOT NULL", quote(&from_col(k))))
        .collect();
    let update = |source: &str, condition: String| {
        format!(
            "UPDATE {rows} AS l SET {} FROM {source} AS p WHERE {condition} AND ({})",
            sets.join(", "),
            flagged.join(" OR ")
        )
    };
    let mut statements = Vec::new();
    if let Some(history) = history {
        // Deletes hold no values, and a key's row cannot be kept across
        // its delete: the last written row of the key is the stored one.
        let partition: Vec<String> = keys.iter().map(|&k| names[k].clone()).collect();
        let written = format!(
            "(SELECT * FROM {history} WHERE {OP} IN ({}, {}) QUALIFY ROW_NUMBER() OVER (PARTITION BY {} ORDER \
             BY {LSN} DESC, {SEQ} DESC) = 1)",
            ChangeOp::Insert as u8,
            ChangeOp::Update as u8,
            partition.join(", ")
        );
        statements.push(update(&written, at_origin.join(" AND ")));
    }
    statements.push(update(target, at_origin.join(" AND ")));
    statements.push(update(
        target,
        format!("{} AND {}", at_key.join(" AND "), moved.join(" AND ")),
    ));
    statements
}

/// The statement applying the landing rows `rows` (a table or a
/// parenthesized query) of `table` to `target` (step 2).
pub fn apply_sql(table: &TableSchema, target: &str, rows: &str) -> String {
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote(&column_name(c)))
        .collect();
    let keys = key_columns(table);
    if keys.is_empty() {
        let selected: Vec<String> = names.iter().map(|n| format!("l.{n}")).collect();
        return format!(
            "INSERT INTO {target} ({}, {LSN}, {SEQ}) SELECT {}, l.{LSN}, l.{SEQ} FROM {rows} AS l \
             WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE t.{LSN} = l.{LSN} AND t.{SEQ} = l.{SEQ}) \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY l.{LSN}, l.{SEQ} ORDER BY l.{LSN}) = 1",
            names.join(", "),
            selected.join(", ")
        );
    }
    let delete = ChangeOp::Delete as u8;
    let partition: Vec<String> = keys.iter().map(|&k| names[k].clone()).collect();
    let on: Vec<String> = keys
        .iter()
        .map(|&k| format!("t.{0} = s.{0}", names[k]))
        .collect();
    let mut sql = format!(
        "MERGE INTO {target} AS t USING (SELECT {}, {OP} FROM {rows} QUALIFY ROW_NUMBER() OVER (PARTITION BY \
         {} ORDER BY {LSN} DESC, {SEQ} DESC) = 1) AS s ON {} WHEN MATCHED AND s.{OP} = {delete} THEN DELETE",
        names.join(", "),
        partition.join(", "),
        on.join(" AND ")
    );
    let updates: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| !keys.contains(i))
        .map(|(_, name)| format!("t.{name} = s.{name}"))
        .collect();
    if !updates.is_empty() {
        sql.push_str(&format!(
            " WHEN MATCHED THEN UPDATE SET {}",
            updates.join(", ")
        ));
    }
    let values: Vec<String> = names.iter().map(|name| format!("s.{name}")).collect();
    sql.push_str(&format!(
        " WHEN NOT MATCHED AND s.{OP} <> {delete} THEN INSERT ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    ));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::table;

    const TARGET: &str = "\"ITEMS\"";
    const LANDING: &str = "\"LANDING_ITEMS\"";

    #[test]
    fn a_keyed_table_merges_the_last_row_of_each_key() {
        assert_eq!(
            apply_sql(&table(1, "items", false), TARGET, LANDING),
            "MERGE INTO \"ITEMS\" AS t USING (SELECT \"ID\", \"V\", \"T\", _PGR_OP FROM \"LANDING_ITEMS\" \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY \"ID\" ORDER BY _PGR_LSN DESC, _PGR_SEQ DESC) = 1) AS s ON \
             t.\"ID\" = s.\"ID\" WHEN MATCHED AND s._PGR_OP = 3 THEN DELETE WHEN MATCHED THEN UPDATE SET \
             t.\"V\" = s.\"V\", t.\"T\" = s.\"T\" WHEN NOT MATCHED AND s._PGR_OP <> 3 THEN INSERT (\"ID\", \
             \"V\", \"T\") VALUES (s.\"ID\", s.\"V\", s.\"T\")"
        );
        let keep = keep_statements(&table(1, "items", false), LANDING, TARGET, None);
        assert_eq!(keep.len(), 2);
        assert_eq!(
            keep[0],
            "UPDATE \"LANDING_ITEMS\" AS l SET \"V\" = IFF(l.\"_PGR_KEEP_1\", p.\"V\", l.\"V\"), \"T\" = \
             IFF(l.\"_PGR_KEEP_2\", p.\"T\", l.\"T\"), \"_PGR_KEEP_1\" = FALSE, \"_PGR_KEEP_2\" = FALSE FROM \
             \"ITEMS\" AS p WHERE p.\"ID\" = COALESCE(l.\"_PGR_FROM_0\", l.\"ID\") AND (l.\"_PGR_KEEP_1\" OR \
             l.\"_PGR_KEEP_2\")"
        );
        assert!(
            keep[1].contains("WHERE p.\"ID\" = l.\"ID\" AND l.\"_PGR_FROM_0\" IS NOT NULL AND"),
            "{}",
            keep[1]
        );
    }

    #[test]
    fn a_table_without_key_is_appended_to_once() {
        let mut log = (*table(1, "log", false)).clone();
        for column in &mut log.columns {
            column.identity = false;
        }
        assert!(keep_statements(&log, "\"LANDING_LOG\"", "\"LOG\"", Some("H")).is_empty());
        assert_eq!(
            apply_sql(&log, "\"LOG\"", "\"LANDING_LOG\""),
            "INSERT INTO \"LOG\" (\"ID\", \"V\", \"T\", _PGR_LSN, _PGR_SEQ) SELECT l.\"ID\", l.\"V\", l.\"T\", \
             l._PGR_LSN, l._PGR_SEQ FROM \"LANDING_LOG\" AS l WHERE NOT EXISTS (SELECT 1 FROM \"LOG\" AS t WHERE \
             t._PGR_LSN = l._PGR_LSN AND t._PGR_SEQ = l._PGR_SEQ) QUALIFY ROW_NUMBER() OVER (PARTITION BY \
             l._PGR_LSN, l._PGR_SEQ ORDER BY l._PGR_LSN) = 1"
        );
    }
}
