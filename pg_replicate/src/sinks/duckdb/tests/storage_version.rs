//! The storage format of the files a sink creates.

use super::*;

/// The storage version number in a DuckDB file's main header (after the
/// 8-byte checksum and the `DUCK` magic). DuckDB 1.x opens a file only
/// when it is 64.
fn header_version(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[8..12], b"DUCK", "not a DuckDB file");
    u64::from_le_bytes(bytes[12..20].try_into().unwrap())
}

#[test]
fn new_files_open_in_duckdb_1_by_default() {
    let file = TempFile::new("storage-default");
    drop(DuckDbSink::open(DuckDbSinkConfig::new(&file.0)).unwrap());
    assert_eq!(header_version(&file.0), 64);

    let newest = TempFile::new("storage-latest");
    let config = DuckDbSinkConfig::new(&newest.0).with_storage_version("latest");
    drop(DuckDbSink::open(config).unwrap());
    assert_ne!(header_version(&newest.0), 64);

    // An existing file keeps its format; the setting only applies to new
    // files.
    drop(DuckDbSink::open(DuckDbSinkConfig::new(&newest.0)).unwrap());
    assert_ne!(header_version(&newest.0), 64);
}

#[test]
fn an_unknown_storage_version_is_a_config_error() {
    let file = TempFile::new("storage-unknown");
    let config = DuckDbSinkConfig::new(&file.0).with_storage_version("v0.0.1-nope");
    let Err(error) = DuckDbSink::open(config) else {
        panic!("a sink opened with an unknown storage version");
    };
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error
            .to_string()
            .contains("storage version \"v0.0.1-nope\""),
        "{error}"
    );
    assert!(!file.0.exists(), "a file was created");
}
