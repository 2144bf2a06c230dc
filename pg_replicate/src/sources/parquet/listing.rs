//! Which files a listing loads, and in which batches: pure.

use crate::types::Lsn;

/// A listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Its path in the store.
    pub path: String,
    /// Its modification time, in microseconds since 1970.
    pub modified_micros: i64,
    /// Its size in bytes.
    pub size: u64,
}

/// The position of a file modified at `modified_micros` (microseconds
/// since 1970): that number as an LSN. Times before 1970 count as 1 µs, so
/// every file is after the empty position.
pub fn file_lsn(modified_micros: i64) -> Lsn {
    Lsn(u64::try_from(modified_micros).unwrap_or(0).max(1))
}

/// The Parquet files of `files` to load after position `after`, modified
/// before `settled_before` (microseconds since 1970), grouped by position
/// in ascending order; each group's files sorted by path.
pub fn due_groups(
    files: Vec<FileEntry>,
    after: Lsn,
    settled_before: i64,
) -> Vec<(Lsn, Vec<FileEntry>)> {
    let mut due: Vec<FileEntry> = files
        .into_iter()
        .filter(|f| f.path.ends_with(".parquet"))
        .filter(|f| file_lsn(f.modified_micros) > after && f.modified_micros < settled_before)
        .collect();
    due.sort_by(|a, b| (a.modified_micros, &a.path).cmp(&(b.modified_micros, &b.path)));
    let mut groups: Vec<(Lsn, Vec<FileEntry>)> = Vec::new();
    for file in due {
        let lsn = file_lsn(file.modified_micros);
        match groups.last_mut() {
            Some((last, files)) if *last == lsn => files.push(file),
            _ => groups.push((lsn, vec![file])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, modified_micros: i64) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            modified_micros,
            size: 1,
        }
    }

    #[test]
    fn files_after_the_position_in_time_order_grouped_by_time() {
        let files = vec![
            file("b.parquet", 30),
            file("a.parquet", 30),
            file("old.parquet", 10),
            file("notes.txt", 40),
            file("c.parquet", 20),
            file("fresh.parquet", 100),
        ];
        let groups = due_groups(files, Lsn(10), 100);
        let names: Vec<(u64, Vec<&str>)> = groups
            .iter()
            .map(|(lsn, files)| (lsn.0, files.iter().map(|f| f.path.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            vec![
                (20, vec!["c.parquet"]),
                (30, vec!["a.parquet", "b.parquet"])
            ]
        );
    }

    #[test]
    fn positions_are_never_the_empty_position() {
        assert_eq!(file_lsn(-5), Lsn(1));
        assert_eq!(file_lsn(0), Lsn(1));
        assert_eq!(file_lsn(1_700_000_000_000_000), Lsn(1_700_000_000_000_000));
        assert_eq!(
            due_groups(vec![file("x.parquet", -5)], Lsn::ZERO, 100).len(),
            1
        );
    }
}
