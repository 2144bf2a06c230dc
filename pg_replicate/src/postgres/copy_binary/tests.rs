//! Tests of the parent module, with hand-built messages.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stop(u64);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped at row {}", self.0)
    }
}

impl std::error::Error for Stop {}

type Row = Vec<Option<Vec<u8>>>;
type Error = CopyBinaryError<Stop>;

fn header(flags: u32, extension: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(extension.len() as i32).to_be_bytes());
    out.extend_from_slice(extension);
    out
}

fn row(out: &mut Vec<u8>, fields: &[Option<&[u8]>]) {
    out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        match f {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
}

fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

fn sample_rows() -> Vec<Row> {
    vec![
        vec![
            Some(b"\x00\x00\x00\x01".to_vec()),
            Some(b"alice".to_vec()),
            None,
        ],
        vec![
            Some(b"\x00\x00\x00\x02".to_vec()),
            Some(Vec::new()),
            Some(vec![0xFF; 40]),
        ],
        vec![None, None, None],
        vec![Some(vec![7]), Some(b"x".to_vec()), Some(Vec::new())],
    ]
}

fn encode(extension: &[u8], rows: &[Row]) -> Vec<u8> {
    let mut out = header(0, extension);
    for r in rows {
        let fields: Vec<Option<&[u8]>> = r.iter().map(|f| f.as_deref()).collect();
        row(&mut out, &fields);
    }
    trailer(&mut out);
    out
}

/// Feeds `chunks` and collects the rows and the final row count.
fn parse<'c>(
    fields: usize,
    chunks: impl IntoIterator<Item = &'c [u8]>,
) -> Result<(Vec<Row>, u64), Error> {
    let mut parser = CopyBinaryParser::new(fields);
    let mut rows = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut |f: &mut RowFields<'_>| {
            assert_eq!(f.len(), fields);
            rows.push(f.map(|v| v.map(<[u8]>::to_vec)).collect());
            Ok(())
        })?;
    }
    let count = parser.finish()?;
    Ok((rows, count))
}

#[test]
fn one_chunk() {
    let stream = encode(b"", &sample_rows());
    let (rows, count) = parse(3, [&stream[..]]).unwrap();
    assert_eq!(rows, sample_rows());
    assert_eq!(count, 4);
}

#[test]
fn every_split_point_gives_the_same_rows() {
    let stream = encode(b"ext!", &sample_rows());
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        let (rows, count) = parse(3, [a, b]).unwrap_or_else(|e| panic!("split {i}: {e}"));
        assert_eq!(rows, sample_rows(), "split at {i}");
        assert_eq!(count, 4);
    }
}

#[test]
fn every_pair_of_split_points_gives_the_same_rows() {
    let stream = encode(b"xy", &sample_rows()[..3]);
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
            let (rows, _) = parse(3, chunks).unwrap_or_else(|e| panic!("{i},{j}: {e}"));
            assert_eq!(rows, sample_rows()[..3], "splits at {i}, {j}");
        }
    }
}

#[test]
fn byte_by_byte_and_fixed_sizes() {
    let stream = encode(&[1, 2, 3, 4, 5, 6, 7], &sample_rows());
    for size in 1..=stream.len() {
        let (rows, count) = parse(3, stream.chunks(size)).unwrap();
        assert_eq!(rows, sample_rows(), "chunks of {size}");
        assert_eq!(count, 4);
    }
    // With empty chunks interleaved.
    let chunks = stream.chunks(1).flat_map(|c| [c, &[][..]]);
    assert_eq!(parse(3, chunks).unwrap().0, sample_rows());
}

#[test]
fn whole_rows_are_not_copied() {
    let stream = encode(b"", &sample_rows());
    let range = stream.as_ptr_range();
    let mut parser = CopyBinaryParser::new(3);
    let mut seen = 0;
    parser
        .feed(&stream, &mut |f: &mut RowFields<'_>| {
            for v in f.flatten() {
                assert!(range.contains(&v.as_ptr()) || v.is_empty());
                seen += 1;
            }
            Ok::<(), Stop>(())
        })
        .unwrap();
    assert_eq!(seen, 8);
    assert!(parser.pending.is_empty() && parser.pending.capacity() < 64);
}

#[test]
fn pending_buffer_is_reused() {
    let rows: Vec<Row> = (0..50u8)
        .map(|i| vec![Some(vec![i; 10]), None, Some(vec![])])
        .collect();
    let stream = encode(b"", &rows);
    let mut parser = CopyBinaryParser::new(3);
    let mut capacity = None;
    let mut n = 0u64;
    // Chunks of 7 bytes cut most rows.
    for chunk in stream.chunks(7) {
        parser
            .feed(chunk, &mut |_: &mut RowFields<'_>| {
                n += 1;
                Ok::<(), Stop>(())
            })
            .unwrap();
        if n > 3 {
            let cap = parser.pending.capacity();
            assert_eq!(*capacity.get_or_insert(cap), cap);
        }
    }
    assert_eq!(parser.finish::<Stop>().unwrap(), 50);
}

#[test]
fn nulls_and_empty_values_differ() {
    let mut stream = header(0, b"");
    row(&mut stream, &[None, Some(b"")]);
    row(&mut stream, &[Some(b""), None]);
    trailer(&mut stream);
    let (rows, _) = parse(2, [&stream[..]]).unwrap();
    assert_eq!(
        rows,
        vec![vec![None, Some(vec![])], vec![Some(vec![]), None]]
    );
}

#[test]
fn empty_table_and_zero_field_rows() {
    let stream = encode(b"", &[]);
    assert_eq!(parse(5, [&stream[..]]).unwrap(), (vec![], 0));
    let stream = encode(b"", &[vec![], vec![]]);
    assert_eq!(
        parse(0, stream.chunks(1)).unwrap(),
        (vec![vec![], vec![]], 2)
    );
}

#[test]
fn header_extension_is_skipped() {
    let ext = vec![0xAB; 300];
    let stream = encode(&ext, &sample_rows());
    assert_eq!(parse(3, stream.chunks(13)).unwrap().0, sample_rows());
    // Non-critical flag bits are ignored.
    let mut stream = header(0x0000_FFFF, b"");
    trailer(&mut stream);
    assert_eq!(parse(1, [&stream[..]]).unwrap().1, 0);
}

#[test]
fn bad_signature_is_reported_early() {
    let mut parser = CopyBinaryParser::new(1);
    let mut on_row = |_: &mut RowFields<'_>| Ok::<(), Stop>(());
    assert_eq!(parser.feed(b"PG", &mut on_row), Ok(()));
    assert_eq!(parser.feed(b"X", &mut on_row), Err(Error::BadSignature));
    assert_eq!(parser.feed(b"", &mut on_row), Err(Error::Failed));
    assert_eq!(parser.finish::<Stop>(), Err(Error::Failed));

    let err = parse(1, [&b"1\t2\n"[..]]).unwrap_err();
    assert_eq!(err, Error::BadSignature);
    assert!(err.to_string().contains("FORMAT binary"));
}

#[test]
fn critical_flags_and_negative_extension_are_rejected() {
    let stream = header(1 << 16, b"");
    assert_eq!(
        parse(1, [&stream[..]]).unwrap_err(),
        Error::UnsupportedFlags { flags: 0x0001_0000 }
    );
    let mut stream = header(0, b"");
    stream[15..19].copy_from_slice(&(-4i32).to_be_bytes());
    assert_eq!(
        parse(1, stream.chunks(3)).unwrap_err(),
        Error::NegativeExtensionLength { length: -4 }
    );
}

#[test]
fn field_count_mismatch() {
    let stream = encode(b"", &sample_rows());
    let err = parse(2, [&stream[..]]).unwrap_err();
    assert_eq!(
        err,
        Error::FieldCount {
            row: 1,
            expected: 2,
            found: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "binary COPY row 1 has 3 fields, expected 2"
    );
    let mut stream = header(0, b"");
    row(&mut stream, &[None]);
    stream.extend_from_slice(&(-2i16).to_be_bytes());
    assert_eq!(
        parse(1, stream.chunks(1)).unwrap_err(),
        Error::FieldCount {
            row: 2,
            expected: 1,
            found: -2
        }
    );
}

#[test]
fn negative_field_length() {
    let mut stream = header(0, b"");
    row(&mut stream, &[Some(b"a"), None]);
    stream.extend_from_slice(&2i16.to_be_bytes());
    stream.extend_from_slice(&(-1i32).to_be_bytes());
    stream.extend_from_slice(&(-7i32).to_be_bytes());
    for size in [1, 5, stream.len()] {
        assert_eq!(
            parse(2, stream.chunks(size)).unwrap_err(),
            Error::NegativeLength {
                row: 2,
                field: 1,
                length: -7
            }
        );
    }
}

#[test]
fn data_after_trailer() {
    let mut stream = encode(b"", &[]);
    stream.push(0);
    assert_eq!(
        parse(1, [&stream[..]]).unwrap_err(),
        Error::DataAfterTrailer { bytes: 1 }
    );
    // In a later chunk, or after a trailer cut in two.
    assert_eq!(
        parse(1, stream.chunks(stream.len() - 1)).unwrap_err(),
        Error::DataAfterTrailer { bytes: 1 }
    );
    let n = stream.len();
    let chunks = [&stream[..n - 2], &stream[n - 2..]];
    assert_eq!(
        parse(1, chunks).unwrap_err(),
        Error::DataAfterTrailer { bytes: 1 }
    );
}

#[test]
fn truncated_streams() {
    assert_eq!(
        parse(1, []).unwrap_err(),
        Error::TruncatedHeader { received: 0 }
    );
    let stream = encode(b"abc", &sample_rows());
    assert_eq!(
        parse(3, [&stream[..10]]).unwrap_err(),
        Error::TruncatedHeader { received: 10 }
    );
    assert_eq!(
        parse(3, [&stream[..20]]).unwrap_err(),
        Error::TruncatedHeaderExtension { missing: 2 }
    );
    assert_eq!(
        parse(3, [&stream[..22]]).unwrap_err(),
        Error::MissingTrailer { rows: 0 }
    );
    assert_eq!(
        parse(3, [&stream[..25]]).unwrap_err(),
        Error::TruncatedRow {
            row: 1,
            received: 3
        }
    );
    let err = parse(3, [&stream[..stream.len() - 1]]).unwrap_err();
    assert_eq!(
        err,
        Error::TruncatedRow {
            row: 5,
            received: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "binary COPY stream ended inside row 5 (1 bytes of it received)"
    );
    // Every strict prefix fails, whatever the chunking.
    for n in 0..stream.len() {
        assert!(parse(3, [&stream[..n]]).is_err(), "prefix {n}");
        assert!(parse(3, stream[..n].chunks(4)).is_err(), "prefix {n}");
    }
}

#[test]
fn callback_error_passes_through() {
    let stream = encode(b"", &sample_rows());
    for chunks in [stream.chunks(stream.len()), stream.chunks(5)] {
        let mut parser = CopyBinaryParser::new(3);
        let mut result = Ok(());
        for chunk in chunks {
            result = parser.feed(chunk, &mut |f: &mut RowFields<'_>| {
                // Fields need not all be read.
                if f.next() == Some(Some(&[0, 0, 0, 2][..])) {
                    return Err(Stop(2));
                }
                Ok(())
            });
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert_eq!(err, Error::Row(Stop(2)));
        assert_eq!(err.to_string(), "stopped at row 2");
        assert_eq!(parser.rows(), 1);
        assert_eq!(err.map_row(|s| s.0 * 10), CopyBinaryError::<u64>::Row(20));
        assert_eq!(parser.finish::<Stop>(), Err(Error::Failed));
    }
}

#[test]
fn accessors() {
    let stream = encode(b"", &sample_rows());
    let mut parser = CopyBinaryParser::new(3);
    assert!(!parser.is_done());
    parser
        .feed(&stream, &mut |_: &mut RowFields<'_>| Ok::<(), Stop>(()))
        .unwrap();
    assert!(parser.is_done());
    assert_eq!(parser.rows(), 4);
    let fields = RowFields::new(&[], 0);
    assert_eq!(format!("{fields:?}"), "RowFields { remaining: 0, .. }");
    let mapped: CopyBinaryError<()> = Error::MissingTrailer { rows: 3 }.map_row(|_| ());
    assert_eq!(mapped, CopyBinaryError::MissingTrailer { rows: 3 });
}

/// Cheap deterministic fuzzing: mutated streams fed in random chunks
/// must parse or fail, never panic, and never disagree between chunkings.
#[test]
fn mutations_never_panic() {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = encode(b"e", &sample_rows());
    for _ in 0..4000 {
        let mut stream = base.clone();
        for _ in 0..=(next() % 3) {
            let i = (next() as usize) % stream.len();
            match next() % 4 {
                0 => stream[i] = next() as u8,
                1 => stream[i] ^= 1 << (next() % 8),
                2 => stream[i] = 0xFF,
                _ => stream.truncate(i),
            }
            if stream.is_empty() {
                stream.push(0);
            }
        }
        let whole = parse(3, [&stream[..]]);
        let size = 1 + (next() as usize) % 16;
        let chunked = parse(3, stream.chunks(size));
        match (&whole, &chunked) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("{stream:?}: {whole:?} vs chunks of {size}: {chunked:?}"),
        }
    }
}
