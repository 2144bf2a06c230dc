//! The binary COPY parser and the binary value decoders, with a table
//! schema drawn by the fuzzer. Input: the number of columns, a byte per
//! column type, a chunk size, then the COPY stream (fed in chunks, as it
//! arrives from the server).

#![no_main]

mod columns;

use libfuzzer_sys::fuzz_target;
use pg_replicate::postgres::copy_binary::CopyBinaryParser;
use pg_replicate::types::values::ColumnBuilder;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8) + 1;
    if rest.len() < count + 1 {
        return;
    }
    let (types, rest) = rest.split_at(count);
    let (chunk, stream) = (usize::from(rest[0]) + 1, &rest[1..]);
    let mut builders: Vec<ColumnBuilder> = types
        .iter()
        .map(|&b| ColumnBuilder::new(&columns::column(b), 8))
        .collect();
    let mut parser = CopyBinaryParser::new(count);
    let mut on_row = |fields: &mut pg_replicate::postgres::copy_binary::RowFields<'_>| {
        for (builder, field) in builders.iter_mut().zip(fields) {
            match field {
                None => builder.append_null(),
                Some(bytes) => builder.append_binary(bytes)?,
            }
        }
        Ok::<(), pg_replicate::types::values::ValueError>(())
    };
    for piece in stream.chunks(chunk) {
        if parser.feed(piece, &mut on_row).is_err() {
            return;
        }
    }
    let _ = parser.finish::<()>();
    for builder in &mut builders {
        let _ = builder.finish();
    }
});
