//! The statements applying a landing table to its target table. Pure
//! text.
//!
//! The last landing row of each key (by `_PGR_LSN`, `_PGR_SEQ`) is the
//! key's state after the changes landed ([`super::landing`]). Inside the
//! batch's transaction:
//!
//! 1. landing rows flagged to keep stored values take them from the target
//!    row at their old key (`UPDATE … FROM`), before anything changes it;
//! 2. every key the landing table touches is deleted from the target
//!    (`DELETE … USING`);
//! 3. the last row of each key is inserted unless it is a delete.
//!
//! This is what a `MERGE` does, as plain DML: the emulator cannot run a
//! `MERGE` inside a transaction (it writes to its catalog). A table without
//! key can only be appended to: its landing rows are inserts. Key columns
//! (a primary key, a replica identity index) hold no NULL, so keys compare
//! with `=`.

use super::landing::{from_col, keep_col, LSN, OP, SEQ};
use super::schema::{column_name, key_columns, landing_name, quote, target_name};
use crate::types::change::ChangeOp;
use crate::types::TableSchema;

/// The statements applying the landing table of `table` to its target;
/// `reads` when some landing row keeps stored values.
pub fn apply_statements(table: &TableSchema, reads: bool) -> Vec<String> {
    let target = quote(&target_name(&table.name));
    let landing = quote(&landing_name(&table.name));
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote(&column_name(c)))
        .collect();
    let keys = key_columns(table);
    if keys.is_empty() {
        return vec![format!(
            "INSERT INTO {target} ({0}) SELECT {0} FROM {landing}",
            names.join(", ")
        )];
    }
    let mut statements = Vec::with_capacity(3);
    let kept: Vec<usize> = (0..names.len()).filter(|i| !keys.contains(i)).collect();
    if reads && !kept.is_empty() {
        let sets: Vec<String> = kept
            .iter()
            .map(|&i| {
                format!(
                    "{0} = IFF(l.{1}, p.{0}, l.{0})",
                    names[i],
                    quote(&keep_col(i))
                )
            })
            .collect();
        let lookup: Vec<String> = keys
            .iter()
            .map(|&k| {
                format!(
                    "p.{0} = COALESCE(l.{1}, l.{0})",
                    names[k],
                    quote(&from_col(k))
                )
            })
            .collect();
        let flagged: Vec<String> = kept
            .iter()
            .map(|&i| format!("l.{}", quote(&keep_col(i))))
            .collect();
        statements.push(format!(
            "UPDATE {landing} AS l SET {} FROM {target} AS p WHERE {} AND ({})",
            sets.join(", "),
            lookup.join(" AND "),
            flagged.join(" OR ")
        ));
    }
    let same_key: Vec<String> = keys
        .iter()
        .map(|&k| format!("t.{0} = l.{0}", names[k]))
        .collect();
    statements.push(format!(
        "DELETE FROM {target} AS t USING {landing} AS l WHERE {}",
        same_key.join(" AND ")
    ));
    let partition: Vec<String> = keys.iter().map(|&k| names[k].clone()).collect();
    statements.push(format!(
        "INSERT INTO {target} ({0}) SELECT {0} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {1} ORDER BY \
         {LSN} DESC, {SEQ} DESC) AS _PGR_RANK FROM {landing}) WHERE _PGR_RANK = 1 AND {OP} <> {2}",
        names.join(", "),
        partition.join(", "),
        ChangeOp::Delete as u8
    ));
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::test_fixtures::table;

    #[test]
    fn a_keyed_table_deletes_touched_keys_and_inserts_their_last_rows() {
        let statements = apply_statements(&table(1, "items", false), false);
        assert_eq!(
            statements,
            [
                "DELETE FROM \"ITEMS\" AS t USING \"LANDING_ITEMS\" AS l WHERE t.\"ID\" = l.\"ID\"",
                "INSERT INTO \"ITEMS\" (\"ID\", \"V\", \"T\") SELECT \"ID\", \"V\", \"T\" FROM (SELECT *, \
                 ROW_NUMBER() OVER (PARTITION BY \"ID\" ORDER BY _PGR_LSN DESC, _PGR_SEQ DESC) AS _PGR_RANK FROM \
                 \"LANDING_ITEMS\") WHERE _PGR_RANK = 1 AND _PGR_OP <> 3",
            ]
        );
        let reading = apply_statements(&table(1, "items", false), true);
        assert_eq!(
            reading[0],
            "UPDATE \"LANDING_ITEMS\" AS l SET \"V\" = IFF(l.\"_PGR_KEEP_1\", p.\"V\", l.\"V\"), \"T\" = \
             IFF(l.\"_PGR_KEEP_2\", p.\"T\", l.\"T\") FROM \"ITEMS\" AS p WHERE p.\"ID\" = \
             COALESCE(l.\"_PGR_FROM_0\", l.\"ID\") AND (l.\"_PGR_KEEP_1\" OR l.\"_PGR_KEEP_2\")"
        );
    }

    #[test]
    fn a_table_without_key_is_appended_to() {
        let statements = apply_statements(&table(1, "log", true), false);
        assert_eq!(
            statements,
            ["INSERT INTO \"LOG\" (\"A\", \"B\", \"T\") SELECT \"A\", \"B\", \"T\" FROM \"LANDING_LOG\""]
        );
    }
}
