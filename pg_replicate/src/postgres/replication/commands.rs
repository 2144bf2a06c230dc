//! Text of the replication commands and parsing of their results. Pure.

use crate::types::table::{quote_identifier, quote_literal};
use crate::types::Lsn;

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifySystem {
    /// Unique cluster identifier (decimal text, as the server sends it).
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// Database connected to; `None` on a physical replication connection.
    pub dbname: Option<String>,
}

/// Result of `CREATE_REPLICATION_SLOT … LOGICAL pgoutput EXPORT_SNAPSHOT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Name of the created slot.
    pub slot_name: String,
    /// First position the slot will stream from: every transaction that
    /// commits after it is streamed, every one before it is in the snapshot.
    pub consistent_point: Lsn,
    /// Exported snapshot, usable with `SET TRANSACTION SNAPSHOT` by other
    /// connections until the next command on the replication connection.
    pub snapshot_name: String,
}

/// `CREATE_REPLICATION_SLOT "name" [TEMPORARY] LOGICAL pgoutput
/// EXPORT_SNAPSHOT` (the pre-15 syntax, which every server since 10 takes).
pub fn create_slot_command(slot_name: &str, temporary: bool) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote_identifier(slot_name),
        if temporary { " TEMPORARY" } else { "" }
    )
}

/// The pgoutput options for `publication` and `protocol_version`; from
/// protocol 2 on, in-progress transactions are streamed (`streaming 'on'`),
/// which is what protocol 2 exists for.
pub fn pgoutput_options(publication: &str, protocol_version: u32) -> Vec<(String, String)> {
    let mut options = vec![
        ("proto_version".to_owned(), protocol_version.to_string()),
        (
            "publication_names".to_owned(),
            quote_identifier(publication),
        ),
    ];
    if protocol_version >= 2 {
        options.push(("streaming".to_owned(), "on".to_owned()));
    }
    options
}

/// `START_REPLICATION SLOT "slot" LOGICAL X/Y ("name" 'value', ...)`.
pub fn start_replication_command(
    slot_name: &str,
    start: Lsn,
    options: &[(String, String)],
) -> String {
    let mut out = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_identifier(slot_name)
    );
    if !options.is_empty() {
        out.push_str(" (");
        for (i, (name, value)) in options.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&quote_identifier(name));
            out.push(' ');
            out.push_str(&quote_literal(value));
        }
        out.push(')');
    }
    out
}

fn single_row<'a>(
    rows: &'a [Vec<Option<String>>],
    command: &str,
    columns: usize,
) -> Result<&'a [Option<String>], String> {
    match rows {
        [row] if row.len() >= columns => Ok(row),
        [row] => Err(format!(
            "{command} returned {} columns, expected at least {columns}",
            row.len()
        )),
        _ => Err(format!(
            "{command} returned {} rows, expected 1",
            rows.len()
        )),
    }
}

fn column<'a>(
    row: &'a [Option<String>],
    index: usize,
    name: &str,
    command: &str,
) -> Result<&'a str, String> {
    row.get(index)
        .and_then(|v| v.as_deref())
        .ok_or_else(|| format!("{command} returned NULL for {name}"))
}

fn lsn(text: &str, name: &str, command: &str) -> Result<Lsn, String> {
    text.parse()
        .map_err(|e| format!("{command} returned an invalid {name}: {e}"))
}

/// Parses the one row of `IDENTIFY_SYSTEM`.
pub fn parse_identify_system(rows: &[Vec<Option<String>>]) -> Result<IdentifySystem, String> {
    const CMD: &str = "IDENTIFY_SYSTEM";
    let row = single_row(rows, CMD, 3)?;
    let timeline = column(row, 1, "timeline", CMD)?;
    Ok(IdentifySystem {
        system_id: column(row, 0, "systemid", CMD)?.to_owned(),
        timeline: timeline
            .parse()
            .map_err(|_| format!("{CMD} returned an invalid timeline `{timeline}`"))?,
        xlogpos: lsn(column(row, 2, "xlogpos", CMD)?, "xlogpos", CMD)?,
        dbname: row.get(3).cloned().flatten(),
    })
}

/// Parses the one row of `CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`.
pub fn parse_created_slot(rows: &[Vec<Option<String>>]) -> Result<CreatedSlot, String> {
    const CMD: &str = "CREATE_REPLICATION_SLOT";
    let row = single_row(rows, CMD, 3)?;
    Ok(CreatedSlot {
        slot_name: column(row, 0, "slot_name", CMD)?.to_owned(),
        consistent_point: lsn(
            column(row, 1, "consistent_point", CMD)?,
            "consistent_point",
            CMD,
        )?,
        snapshot_name: column(row, 2, "snapshot_name", CMD)?.to_owned(),
    })
}

/// Parses the `server_version` parameter (`15.8 (Debian …)`, `9.6.3`,
/// `17beta1`) into the `server_version_num` form (150008, 90603, 170000).
pub fn parse_server_version_num(version: &str) -> Option<u32> {
    let token = version.split_whitespace().next()?;
    let mut parts = token.split('.').map(|part| {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        part[..digits].parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    if major >= 10 {
        Some(major * 10_000 + minor)
    } else {
        let patch = parts.next().flatten().unwrap_or(0);
        Some(major * 10_000 + minor * 100 + patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version_num("15.8 (Debian 15.8-1.pgdg120+1)"),
            Some(150008)
        );
        assert_eq!(parse_server_version_num("9.6.3"), Some(90603));
        assert_eq!(parse_server_version_num("17beta1"), Some(170000));
        assert_eq!(parse_server_version_num("16devel"), Some(160000));
        assert_eq!(parse_server_version_num(""), None);
        assert_eq!(parse_server_version_num("x"), None);
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn quoting() {}

    #[test]
    fn commands() {
        assert_eq!(
            create_slot_command("s1", false),
            "CREATE_REPLICATION_SLOT \"s1\" LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s1", true),
            "CREATE_REPLICATION_SLOT \"s1\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            start_replication_command(
                "s1",
                Lsn(0x16_B374_D848),
                &pgoutput_options("my \"pub\", 'x'", 1)
            ),
            "START_REPLICATION SLOT \"s1\" LOGICAL 16/B374D848 (\"proto_version\" '1', \
             \"publication_names\" '\"my \"\"pub\"\", ''x''\"')"
        );
        assert_eq!(
            start_replication_command("s", Lsn::ZERO, &pgoutput_options("p", 2)),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (\"proto_version\" '2', \
             \"publication_names\" '\"p\"', \"streaming\" 'on')"
        );
        assert_eq!(
            start_replication_command("s", Lsn::ZERO, &[]),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
        );
    }

    #[test]
    fn parses_identify_system() {
        let rows = vec![row(&[
            Some("7301234567890123456"),
            Some("1"),
            Some("0/1A2B3C8"),
            Some("shop"),
        ])];
        assert_eq!(
            parse_identify_system(&rows).unwrap(),
            IdentifySystem {
                system_id: "7301234567890123456".into(),
                timeline: 1,
                xlogpos: Lsn(0x1A2B3C8),
                dbname: Some("shop".into()),
            }
        );
        let rows = vec![row(&[Some("1"), Some("2"), Some("0/0"), None])];
        assert_eq!(parse_identify_system(&rows).unwrap().dbname, None);
        assert!(parse_identify_system(&[]).is_err());
        let rows = vec![row(&[Some("1"), Some("x"), Some("0/0"), None])];
        assert!(parse_identify_system(&rows)
            .unwrap_err()
            .contains("timeline"));
    }

    #[test]
    fn parses_created_slot() {
        let rows = vec![row(&[
            Some("s1"),
            Some("0/1565A30"),
            Some("00000003-00000002-1"),
            Some("pgoutput"),
        ])];
        assert_eq!(
            parse_created_slot(&rows).unwrap(),
            CreatedSlot {
                slot_name: "s1".into(),
                consistent_point: Lsn(0x1565A30),
                snapshot_name: "00000003-00000002-1".into(),
            }
        );
        let rows = vec![row(&[Some("s1"), Some("0/1"), None, Some("pgoutput")])];
        assert!(parse_created_slot(&rows)
            .unwrap_err()
            .contains("snapshot_name"));
    }
}
