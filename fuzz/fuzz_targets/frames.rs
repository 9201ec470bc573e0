//! The frame decoder: arbitrary bytes, arriving in arbitrary pieces, never panic, never
//! yield a message over the limits, and never yield invalid UTF-8 as text.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard::gateway::frame::{DecodeLimits, Decoded, Decoder};

fuzz_target!(|input: (u8, &[u8])| {
    let (chunk, data) = input;
    let chunk = usize::from(chunk.max(1));
    let limits = DecodeLimits {
        max_frame: 1024,
        max_message: 4096,
        accept_binary: chunk % 2 == 0,
    };
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf, &limits) {
                Ok(Some(Decoded::Message { data, binary })) => {
                    assert!(data.len() <= limits.max_message);
                    assert!(binary || std::str::from_utf8(&data).is_ok());
                    assert!(!binary || limits.accept_binary);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(violation) => {
                    assert!(matches!(violation.code, 1002 | 1003 | 1007 | 1009));
                    return;
                }
            }
        }
    }
});
