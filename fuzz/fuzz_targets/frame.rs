//! Arbitrary bytes, fed to the frame decoder in arbitrary chunks, under an
//! arbitrary limit. Asserts the decoder's invariants, not only "no panic":
//! - consumed + still buffered = everything fed, and the buffer holds exactly
//!   the unconsumed suffix;
//! - every decoded frame re-encodes to exactly the bytes it was decoded from;
//! - the borrowed parser agrees with the buffered decoder;
//! - partial input never asks for more than one maximum frame;
//! - the only framing error is an oversized header, reported before the
//!   payload, with nothing consumed;
//! - every payload that parses as a typed message re-encodes identically;
//! - batch decoding (`decode_all`) yields the same payloads and errors.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shorty_protocol::frame::{encode_frame, parse_frame, FrameDecoder, Status, HEADER_LEN};
use shorty_protocol::{Error, Reply, Request};

#[derive(Debug, Arbitrary)]
struct Input {
    max_frame_len: u16,
    chunk_lens: Vec<u8>,
    stream: Vec<u8>,
}

fn reencodes_identically(payload: &[u8]) {
    if let Ok(req) = Request::parse_payload(payload) {
        let mut out = Vec::new();
        req.encode_frame(&mut out)
            .expect("a parsed request encodes");
        assert_eq!(&out[HEADER_LEN..], payload);
    }
    if let Ok(rep) = Reply::parse_payload(payload) {
        let mut out = Vec::new();
        rep.encode_frame(&mut out).expect("a parsed reply encodes");
        assert_eq!(&out[HEADER_LEN..], payload);
    }
}

fuzz_target!(|input: Input| {
    let decoder = FrameDecoder::with_max_frame_len(usize::from(input.max_frame_len));
    let stream = &input.stream[..];
    let mut payloads = Vec::new();
    let result = feed(&input, &decoder, &mut payloads);
    // The same stream, the same chunks, decoded a batch at a time.
    let mut lens = input.chunk_lens.iter().map(|&l| usize::from(l) + 1).cycle();
    let (mut buf, mut fed, mut batched) = (BytesMut::new(), 0, Vec::new());
    let mut batch_err = None;
    while fed < stream.len() && batch_err.is_none() {
        let len = lens.next().unwrap_or(stream.len()).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + len]);
        fed += len;
        loop {
            match decoder.decode_all(&mut buf) {
                Ok(frames) if frames.is_empty() => break,
                Ok(frames) => batched.extend(frames.payloads()),
                Err(err) => {
                    batch_err = Some(err);
                    break;
                }
            }
        }
    }
    assert_eq!(payloads, batched);
    assert_eq!(result.err(), batch_err);
});

/// Feeds the stream chunk by chunk to `decode`, checking every invariant;
/// collects the payloads; returns the framing error that ended it, if any.
fn feed(
    input: &Input,
    decoder: &FrameDecoder,
    payloads: &mut Vec<bytes::Bytes>,
) -> Result<(), Error> {
    let max = decoder.max_frame_len();
    let stream = &input.stream[..];
    let mut buf = BytesMut::new();
    let (mut fed, mut consumed) = (0usize, 0usize);
    let mut lens = input.chunk_lens.iter().map(|&l| usize::from(l) + 1).cycle();
    while fed < stream.len() {
        let len = lens.next().unwrap_or(stream.len()).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + len]);
        fed += len;
        loop {
            let borrowed = parse_frame(&buf, max).map(|s| match s {
                Status::Complete(f) => Status::Complete(f.payload().to_vec()),
                Status::Partial { needed } => Status::Partial { needed },
            });
            let before = buf.len();
            let owned = decoder.decode(&mut buf);
            match owned {
                Ok(Status::Complete(payload)) => {
                    assert_eq!(borrowed, Ok(Status::Complete(payload.to_vec())));
                    assert!(payload.len() <= max);
                    let mut again = Vec::new();
                    encode_frame(&payload, &mut again).unwrap();
                    assert_eq!(&again[..], &stream[consumed..consumed + again.len()]);
                    consumed += before - buf.len();
                    assert_eq!(before - buf.len(), again.len());
                    reencodes_identically(&payload);
                    payloads.push(payload);
                }
                Ok(Status::Partial { needed }) => {
                    assert_eq!(borrowed, Ok(Status::Partial { needed }));
                    assert!(needed >= 1 && buf.len() + needed <= HEADER_LEN + max);
                    break;
                }
                Err(err) => {
                    assert_eq!(borrowed, Err(err.clone()));
                    let Error::FrameTooLarge { len, max: m, .. } = err else {
                        panic!("framing fails only on size, got {err}");
                    };
                    assert!(len > m && m == max);
                    assert_eq!(buf.len(), before, "nothing consumed on error");
                    assert_eq!(consumed + buf.len(), fed);
                    return Err(err);
                }
            }
            assert_eq!(consumed + buf.len(), fed);
            assert_eq!(&buf[..], &stream[consumed..fed]);
        }
    }
    Ok(())
}
