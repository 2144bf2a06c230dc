//! The pgoutput decoder, and the text and binary value decoders its tuple
//! values go through. Input: a selector byte (plain or streamed message,
//! and the column type the values are decoded as), then the message.

#![no_main]

mod columns;

use libfuzzer_sys::fuzz_target;
use pg_replicate::postgres::pgoutput::{decode, decode_streamed, PgOutputMessage, TupleValue};
use pg_replicate::types::values::ColumnBuilder;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let decoded = if selector & 1 == 0 {
        decode(message)
    } else {
        decode_streamed(message).map(|(_, message)| message)
    };
    let Ok(message) = decoded else {
        return;
    };
    let tuples = match &message {
        PgOutputMessage::Insert { new, .. } => vec![new.clone()],
        PgOutputMessage::Update { old, new, .. } => {
            let mut tuples = vec![new.clone()];
            tuples.extend(old.as_ref().map(|old| old.tuple().clone()));
            tuples
        }
        PgOutputMessage::Delete { old, .. } => vec![old.tuple().clone()],
        _ => Vec::new(),
    };
    let column = columns::column(selector >> 1);
    let mut builder = ColumnBuilder::new(&column, 4);
    for tuple in &tuples {
        for value in tuple.iter() {
            let _ = match value {
                TupleValue::Null | TupleValue::UnchangedToast => {
                    builder.append_null();
                    Ok(())
                }
                TupleValue::Text(text) => builder.append_text(text),
                TupleValue::Binary(bytes) => builder.append_binary(bytes),
            };
        }
    }
    let _ = builder.finish();
});
