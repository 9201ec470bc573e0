//! Frame encoding (once per broadcast) and decoding (once per client frame).
#![allow(
    missing_docs,
    reason = "criterion_main! generates an undocumented main"
)]

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use switchboard::gateway::frame::{DecodeLimits, Decoder, OutFrame};
use switchboard_bench::encode_client_frame;

const LIMITS: DecodeLimits = DecodeLimits {
    max_frame: 32 * 1024,
    max_message: 128 * 1024,
    accept_binary: false,
};

fn frames(c: &mut Criterion) {
    let small = vec![b'x'; 64];
    let large = vec![b'x'; 16 * 1024];
    c.bench_function("frame/encode_text_64B", |b| {
        b.iter(|| OutFrame::text(black_box(&small)))
    });
    c.bench_function("frame/encode_text_16KiB", |b| {
        b.iter(|| OutFrame::text(black_box(&large)))
    });
    // What a broadcast costs per recipient on top of the shared encoding: one clone.
    let shared = OutFrame::text(&small);
    c.bench_function("frame/share_encoded_frame", |b| {
        b.iter(|| black_box(&shared).bytes().clone())
    });

    let body = br#"{"action":"sendmessage","message":"~00000000000f4240000000017xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let one = encode_client_frame(1, true, body, [1, 2, 3, 4]);
    c.bench_function("frame/decode_masked_text_100B", |b| {
        b.iter_batched(
            || BytesMut::from(&one[..]),
            |mut buf| Decoder::default().decode(&mut buf, &LIMITS),
            BatchSize::SmallInput,
        )
    });
    let mut many = Vec::new();
    for _ in 0..64 {
        many.extend_from_slice(&one);
    }
    c.bench_function("frame/decode_64_frames_from_one_read", |b| {
        b.iter_batched(
            || BytesMut::from(&many[..]),
            |mut buf| {
                let mut decoder = Decoder::default();
                let mut n = 0;
                while let Ok(Some(_)) = decoder.decode(&mut buf, &LIMITS) {
                    n += 1;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
