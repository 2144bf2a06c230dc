//! The framing of the replication connection: backend messages cut from a
//! byte stream in chunks (CopyBothResponse, CopyData, errors, notices),
//! and the CopyData payloads decoded as XLogData and keepalives, whose
//! XLogData bodies go on to the pgoutput decoder. Input: a chunk size,
//! then the stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pg_replicate::postgres::pgoutput::decode;
use pg_replicate::postgres::replication::codec::{BackendMessage, PgCodec};
use pg_replicate::postgres::replication::ReplicationMessage;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    let mut codec = PgCodec::new();
    let mut buffer = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(BackendMessage::CopyData(payload))) => {
                    if let Ok(ReplicationMessage::XLogData { data, .. }) =
                        ReplicationMessage::decode(payload)
                    {
                        let _ = decode(&data);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
